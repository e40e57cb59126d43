#!/usr/bin/env bash
# The workbench goes through the store's ownership checks (RELIABILITY.md, "Who owns a
# run"): D confirmed after the run was resumed from a shell while the prompt was open is
# refused, the run and its folder kept; r y r y typed fast starts the run once (one helper
# gets it, the other is told who has it), and the run ends done with each step once. A
# resume that the workbench started and a cancel stopped is no failure: its helper exits
# 143 (SIGTERM) and the workbench shows the run cancelled without a "resume failed".
set -u
SOCK_PREFIX=lbtuiown
. tests/tui_common.sh
q() { sqlite3 -cmd ".timeout 5000" "$W/lorabench.db" "$1"; }
cat > "$T/own.json" <<JSON
{ "name": "own", "base_model": "$M", "method": "lora",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": { "r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"] },
  "train": { "max_steps": 12, "batch_size": 4, "lr": 0.003, "seed": 7, "checkpoint_every": 2 },
  "eval": { "limit": 2, "max_new_tokens": 4 }, "threads": 1 }
JSON
# A run whose worker vanished after 2 steps: interrupted.
LORABENCH_TEST_DIE_AFTER=2 "$B" train "$T/own.json" --workspace "$W" > /dev/null 2>&1
"$B" runs --workspace "$W" > /dev/null 2>&1
# The workbench's helpers (resume) run their steps slowly, so that the run is still running
# while the keys arrive.
tm -f /dev/null new-session -d -s lb -x 120 -y 30 \
    "cd '$PWD' && LORABENCH_TEST_STEP_DELAY_MS=150 '$B' --workspace '$W'; echo EXITED; sleep 60"
check "the interrupted run is listed" 'wait_for "^ +1 own +interrupted" 10'

# D, then the run is resumed from a shell, then y.
keys D
check "D asks" 'wait_for "Delete run #1 own" 5'
LORABENCH_TEST_STEP_DELAY_MS=150 "$B" resume 1 --detach --workspace "$W" > /dev/null 2>&1
keys y
check "y on the stale prompt: refused, saying the run is running" 'wait_for "run 1 is running \\(worker pid [0-9]+\\); cancel it first" 5'
check "the run and its folder are kept" '[ "$(q "SELECT COUNT(*) FROM runs WHERE id = 1")" = 1 ] && [ -f "$W/runs/1/RUN" ]'

# Stopped again, then r y r y as fast as tmux types.
"$B" cancel 1 --workspace "$W" > /dev/null 2>&1
check "cancelled" 'wait_for "^ +1 own +cancelled" 20'
keys r y r y
check "the second resume is refused, saying who has the run" 'wait_for "resume failed: run 1 is (running|queued by process)" 10'
check "the run ends done" 'wait_for "^ +1 own +done" 60'
check "one helper ran it, the other was told who has it" \
    '[ "$(grep -cE "run 1 is (running|queued by process)" "$W/runs/ui-spawn.log")" = 1 ]'
check "each step once" '[ "$(q "SELECT COUNT(*) || \",\" || MAX(step) FROM metrics WHERE run_id = 1")" = "12,12" ]'
keys q
wait_for "EXITED" 5 > /dev/null

W2="$T/ws2"
LORABENCH_TEST_DIE_AFTER=2 "$B" train "$T/own.json" --workspace "$W2" > /dev/null 2>&1
"$B" runs --workspace "$W2" > /dev/null 2>&1
tm kill-session -t lb
tm -f /dev/null new-session -d -s lb -x 120 -y 30 \
    "cd '$PWD' && LORABENCH_TEST_STEP_DELAY_MS=150 '$B' --workspace '$W2'; echo EXITED; sleep 60"
wait_for "^ +1 own +interrupted" 10 > /dev/null
keys r y
wait_for "1 run, 1 running" 20 > /dev/null
"$B" cancel 1 --workspace "$W2" > /dev/null 2>&1
# the helper's last words (its result line) are in the log once it is ending
for _ in $(seq 100); do grep -q "^run 1 own: cancelled" "$W2/runs/ui-spawn.log" 2> /dev/null && break; sleep 0.1; done
sleep 1  # the workbench reaps it within a frame
check "a resume started in the workbench and cancelled: shown cancelled, no \"resume failed\"" \
    'wait_for "^ +1 own +cancelled" 20 && ! grep -q "failed" "$T/screen"'
keys q
wait_for "EXITED" 5 > /dev/null
echo "$pass passed, $fail failed"
