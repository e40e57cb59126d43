#!/usr/bin/env bash
# Run ownership (RELIABILITY.md, "Who owns a run"): every queued or running run has one owner
# that the store names with its pid and start time; claims are single conditional updates.
#  1. A new run never adopts an old run's folder or checkpoint (a restored database), and a
#     folder or checkpoint of another run is refused on resume.
#  2. Two `resume ID` at once: exactly one executes the run, the other says who has it.
#  3. A sweep's queued runs: resume is refused while the sweep owns them; a cancelled one is
#     skipped, a deleted one is skipped without an orphan folder, rm of a queued one is
#     refused while its owner lives.
#  4. A sweep driver killed with SIGKILL leaves no run queued; Ctrl-C exits 130 and cancels
#     the runs it had not started. A foreground train stopped by Ctrl-C exits 130 and a
#     foreground resume stopped by SIGTERM 143, the run cancelled with its checkpoint as
#     before; a resume that finishes exits 0.
#  5. A dead worker whose pid now belongs to another process: cancel does not signal that
#     process, the run is seen dead (interrupted) and resumes.
#  6. train --detach whose worker cannot start leaves the run failed with the reason.
#  7. Runs and sweeps at once with readers polling: every run done, no errors.
set -u
B="$1/lorabench"
T=$(mktemp -d)
sleepers=""
trap 'for p in $sleepers; do kill "$p" 2>/dev/null; done; rm -rf "$T"' EXIT
. tests/e2e_common.sh
q() { sqlite3 -cmd ".timeout 5000" "$1/lorabench.db" "$2"; }

spec() {  # name steps targets extra-json
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$M", "method": "lora",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": { "r": 4, "alpha": 8, "dropout": 0.0, "targets": [$3] },
  "train": { "max_steps": $2, "batch_size": 4, "lr": 0.003, "seed": 7, "checkpoint_every": 2 },
  "eval": { "limit": 2, "max_new_tokens": 4 },
  "threads": 1 $4 }
JSON
}
# waits (up to $2 s) until the shell test $1 holds
wait_until() { for _ in $(seq 1 $(($2 * 20))); do eval "$1" && return 0; sleep 0.05; done; return 1; }

# ---- 1. no adoption ----------------------------------------------------------------------
W1="$T/ws1"
spec old 4 '"q", "v"' ""
LORABENCH_TEST_DIE_AFTER=3 "$B" train "$T/old.json" --workspace "$W1" > /dev/null 2>&1
check "the old run left a checkpoint in runs/1" '[ -f "$W1/runs/1/checkpoint.safetensors" ] && [ -f "$W1/runs/1/RUN" ]'
# The database is lost and a fresh one made (a backup from before run 1 restored).
rm -f "$W1"/lorabench.db*
spec new 4 '"k", "o"' ""
"$B" train "$T/new.json" --workspace "$W1" --json > "$T/out1" 2> "$T/err1"; rc=$?
check "a new run in a restored database gets a fresh id and folder, not runs/1" \
    '[ $rc -eq 0 ] && grep -q "\"id\":2,.*\"status\":\"done\"" "$T/out1" && [ "$(q "$W1" "SELECT COUNT(*) FROM runs WHERE id = 1")" = 0 ]'
check "it trained from the start (4 metric rows), the old checkpoint left alone" \
    '[ "$(q "$W1" "SELECT COUNT(*) FROM metrics WHERE run_id = 2")" = 4 ] && [ -f "$W1/runs/1/checkpoint.safetensors" ]'
# A checkpoint of another run put in a run's folder is refused, not loaded.
LORABENCH_TEST_DIE_AFTER=3 "$B" train "$T/old.json" --workspace "$W1" > /dev/null 2>&1
cp "$W1/runs/1/checkpoint.safetensors" "$W1/runs/3/checkpoint.safetensors"
"$B" resume 3 --workspace "$W1" > /dev/null 2> "$T/err1b"; rc=$?
check "resume refuses another run's checkpoint, naming it" \
    '[ $rc -ne 0 ] && grep -q "runs/3/checkpoint.safetensors belongs to another run" "$T/err1b" && [ "$(q "$W1" "SELECT COUNT(*) FROM metrics WHERE run_id = 3 AND step > 3")" = 0 ]'
# A folder stamped for another run is refused too.
cp "$W1/runs/1/RUN" "$W1/runs/3/RUN"
rm "$W1/runs/3/checkpoint.safetensors"
"$B" resume 3 --workspace "$W1" > /dev/null 2> "$T/err1c"; rc=$?
check "resume refuses a folder stamped for another run" '[ $rc -ne 0 ] && grep -q "runs/3 belongs to another run" "$T/err1c"'

# ---- 2. two resumes at once --------------------------------------------------------------
W2="$T/ws2"
spec two 6 '"q", "v"' ""
LORABENCH_TEST_DIE_AFTER=2 "$B" train "$T/two.json" --workspace "$W2" > /dev/null 2>&1
"$B" runs --workspace "$W2" > /dev/null 2>&1  # a reader sees the worker gone
check "a vanished worker is seen at once (interrupted)" '[ "$(q "$W2" "SELECT status FROM runs WHERE id = 1")" = interrupted ]'
LORABENCH_TEST_STEP_DELAY_MS=100 "$B" resume 1 --workspace "$W2" > "$T/r2a" 2> "$T/e2a" & pa=$!
LORABENCH_TEST_STEP_DELAY_MS=100 "$B" resume 1 --workspace "$W2" > "$T/r2b" 2> "$T/e2b" & pb=$!
wait $pa; ra=$?; wait $pb; rb=$?
check "two resumes at once: exactly one runs the run" \
    '{ [ $ra -eq 0 ] && [ $rb -ne 0 ]; } || { [ $ra -ne 0 ] && [ $rb -eq 0 ]; }'
check "the other says who has it" 'grep -hqE "run 1 is (running|queued by process)" "$T/e2a" "$T/e2b"'
check "the run is done with each step once" \
    '[ "$(q "$W2" "SELECT status FROM runs WHERE id = 1")" = done ] && [ "$(q "$W2" "SELECT COUNT(*) FROM metrics WHERE run_id = 1")" = 6 ]'

# ---- 3. a sweep's queued runs ------------------------------------------------------------
W3="$T/ws3"
spec sw 6 '"q", "v"' ', "grid": { "lora.r": [2, 4, 8, 16] }'
LORABENCH_TEST_STEP_DELAY_MS=300 "$B" sweep "$T/sw.json" --workspace "$W3" > "$T/o3" 2> "$T/e3" & sp=$!
wait_until '[ "$(q "$W3" "SELECT status FROM runs WHERE id = 1" 2>/dev/null)" = running ]' 20
"$B" resume 3 --workspace "$W3" > /dev/null 2> "$T/e3r"; rc=$?
check "resume of a run the sweep still owns is refused" '[ $rc -ne 0 ] && grep -q "run 3 is queued by process $sp" "$T/e3r"'
"$B" rm 2 --workspace "$W3" > /dev/null 2> "$T/e3m"; rc=$?
check "rm of a queued run whose sweep lives is refused" '[ $rc -ne 0 ] && grep -q "cancel it first" "$T/e3m" && grep -q "nothing deleted" "$T/e3m"'
"$B" cancel 2 --workspace "$W3" > /dev/null 2>&1 && "$B" rm 2 --workspace "$W3" > /dev/null 2>&1
"$B" cancel 3 --workspace "$W3" > /dev/null 2>&1
"$B" cancel 4 --workspace "$W3" > /dev/null 2>&1
"$B" resume 4 --detach --workspace "$W3" > /dev/null 2>&1
wait $sp
check "the sweep skipped the deleted run (no orphan folder)" 'grep -q "run 2 (.*) skipped: it was deleted" "$T/e3" && [ ! -e "$W3/runs/2" ]'
check "the sweep skipped the cancelled run, which stays cancelled" \
    'grep -q "run 3 (.*) skipped: it is no longer queued" "$T/e3" && [ "$(q "$W3" "SELECT status FROM runs WHERE id = 3")" = cancelled ]'
wait_until '[ "$(q "$W3" "SELECT status FROM runs WHERE id = 4")" = done ]' 30
check "the resumed run ran once, by its resumer (the sweep skipped it)" \
    'grep -q "run 4 (.*) skipped" "$T/e3" && [ "$(q "$W3" "SELECT status FROM runs WHERE id = 4")" = done ] && [ "$(q "$W3" "SELECT COUNT(*) FROM metrics WHERE run_id = 4")" = 6 ]'

# ---- 4. a killed sweep driver ------------------------------------------------------------
W4="$T/ws4"
spec k 6 '"q", "v"' ', "grid": { "lora.r": [2, 4, 8] }'
LORABENCH_TEST_STEP_DELAY_MS=200 "$B" sweep "$T/k.json" --workspace "$W4" > /dev/null 2>&1 & sp=$!
wait_until '[ "$(q "$W4" "SELECT status FROM runs WHERE id = 1" 2>/dev/null)" = running ]' 20
kill -9 $sp; wait $sp 2>/dev/null
"$B" runs --workspace "$W4" > /dev/null 2>&1
check "SIGKILL of the sweep driver: its queued runs are interrupted, none left queued" \
    '[ "$(q "$W4" "SELECT COUNT(*) FROM runs WHERE status = '"'queued'"'")" = 0 ] && [ "$(q "$W4" "SELECT COUNT(*) FROM runs WHERE status = '"'interrupted'"' AND error LIKE '"'%queued it%'"'")" = 2 ]'
"$B" resume 2 --workspace "$W4" > /dev/null 2>&1; rc=$?
check "such a run resumes" '[ $rc -eq 0 ] && [ "$(q "$W4" "SELECT status FROM runs WHERE id = 2")" = done ]'
W4b="$T/ws4b"
LORABENCH_TEST_STEP_DELAY_MS=200 "$B" sweep "$T/k.json" --workspace "$W4b" > /dev/null 2> "$T/e4b" & sp=$!
wait_until '[ "$(q "$W4b" "SELECT status FROM runs WHERE id = 1" 2>/dev/null)" = running ]' 20
kill -INT $sp; wait $sp; rc=$?
check "Ctrl-C of a sweep exits 130 and cancels what it had not started" \
    '[ $rc -eq 130 ] && [ "$(q "$W4b" "SELECT COUNT(*) FROM runs WHERE status = '"'cancelled'"'")" = 3 ] && grep -q "2 runs not started are cancelled" "$T/e4b"'
W4c="$T/ws4c"
spec fg 12 '"q", "v"' ""
step4c() { q "$W4c" "SELECT step FROM runs WHERE id = 1" 2>/dev/null; }
want4c="cancelled at the user's request; \`lorabench resume\` continues it"
LORABENCH_TEST_STEP_DELAY_MS=200 "$B" train "$T/fg.json" --workspace "$W4c" > "$T/o4c" 2> "$T/e4c" & tp=$!
wait_until '[ "$(step4c)" -ge 2 ] 2>/dev/null' 20
kill -INT $tp; wait $tp; rc=$?
s4c=$(step4c)
check "Ctrl-C of a foreground train exits 130; the run is cancelled with its checkpoint, as before ($rc, step $s4c)" \
    '[ $rc -eq 130 ] && [ "$(q "$W4c" "SELECT status FROM runs WHERE id = 1")" = cancelled ] && [ "$(q "$W4c" "SELECT error FROM runs WHERE id = 1")" = "$want4c" ] &&
     [ -f "$W4c/runs/1/checkpoint.safetensors" ] && [ "$s4c" -ge 2 ] && [ "$s4c" -lt 12 ] && grep -q "^run 1 fg: cancelled" "$T/o4c" && ! grep -q "failed" "$T/e4c"'
LORABENCH_TEST_STEP_DELAY_MS=200 "$B" resume 1 --workspace "$W4c" > "$T/o4d" 2> "$T/e4d" & tp=$!
wait_until '[ "$(step4c)" -ge $((s4c + 2)) ] 2>/dev/null' 20
kill -TERM $tp; wait $tp; rc=$?
s4d=$(step4c)
check "SIGTERM of a foreground resume exits 143; the run is cancelled again, further on ($rc, step $s4d)" \
    '[ $rc -eq 143 ] && [ "$(q "$W4c" "SELECT status FROM runs WHERE id = 1")" = cancelled ] && [ "$(q "$W4c" "SELECT error FROM runs WHERE id = 1")" = "$want4c" ] &&
     [ "$s4d" -gt "$s4c" ] && [ "$s4d" -lt 12 ] && grep -q "^run 1 fg: cancelled" "$T/o4d"'
"$B" resume 1 --workspace "$W4c" --json > "$T/o4e" 2> /dev/null; rc=$?
check "a resume that finishes exits 0" '[ $rc -eq 0 ] && grep -q "\"status\":\"done\"" "$T/o4e" && [ "$(step4c)" = 12 ]'

# ---- 5. a dead worker's pid reused -------------------------------------------------------
W5="$T/ws5"
spec pr 4 '"q", "v"' ""
LORABENCH_TEST_DIE_AFTER=2 "$B" train "$T/pr.json" --workspace "$W5" > /dev/null 2>&1
sleep 60 & victim=$!; sleepers="$victim"
# The run looks as if its worker had the pid the sleeping process has now, with another start time.
q "$W5" "UPDATE runs SET status = 'running', pid = $victim, pid_start = 12345, heartbeat = strftime('%s', 'now') WHERE id = 1"
"$B" cancel 1 --workspace "$W5" > /dev/null 2> "$T/e5"; rc=$?
check "cancel does not signal a process that only has the dead worker's pid" \
    'kill -0 $victim 2>/dev/null && [ $rc -ne 0 ] && grep -q "no live worker" "$T/e5"'
check "the run is seen dead: interrupted" '[ "$(q "$W5" "SELECT status FROM runs WHERE id = 1")" = interrupted ]'
q "$W5" "UPDATE runs SET status = 'running', pid = $victim, pid_start = 12345 WHERE id = 1"
"$B" runs --workspace "$W5" > /dev/null 2>&1
check "a reader sees it dead too, and resume finishes it" \
    '[ "$(q "$W5" "SELECT status FROM runs WHERE id = 1")" = interrupted ] && "$B" resume 1 --workspace "$W5" > /dev/null 2>&1 && [ "$(q "$W5" "SELECT status FROM runs WHERE id = 1")" = done ] && kill -0 $victim'
kill $victim; wait $victim 2>/dev/null; sleepers=""

# ---- 6. train --detach whose worker does not start ---------------------------------------
W6="$T/ws6"
spec det 4 '"q", "v"' ""
LORABENCH_TEST_WORKER_FAIL="cannot start (test)" "$B" train "$T/det.json" --detach --workspace "$W6" > /dev/null 2> "$T/e6"; rc=$?
check "train --detach with a worker that exits at once: exit 1, run failed with the reason" \
    '[ $rc -eq 1 ] && grep -q "exited before starting the run" "$T/e6" && [ "$(q "$W6" "SELECT status FROM runs WHERE id = 1")" = failed ] && q "$W6" "SELECT error FROM runs WHERE id = 1" | grep -q "cannot start (test)"'

# ---- 7. runs and sweeps at once, with readers --------------------------------------------
W7="$T/ws7"
spec c 4 '"q", "v"' ', "grid": { "lora.r": [2, 4] }'
spec c1 4 '"q", "v"' ""
"$B" sweep "$T/c.json" --detach --workspace "$W7" > /dev/null 2> "$T/e7" &
"$B" sweep "$T/c.json" --detach --workspace "$W7" > /dev/null 2>> "$T/e7" &
"$B" train "$T/c1.json" --workspace "$W7" > /dev/null 2>> "$T/e7" &
"$B" train "$T/c1.json" --detach --workspace "$W7" > /dev/null 2>> "$T/e7" &
wait $(jobs -p)
for _ in $(seq 1 40); do "$B" runs --json --workspace "$W7" > "$T/r7" 2>> "$T/e7r"; done
wait_until '[ "$(q "$W7" "SELECT COUNT(*) FROM runs WHERE status = '"'done'"'")" = 6 ]' 40
check "2 sweeps and 2 runs at once with readers: all 6 done, each step once" \
    '[ "$(q "$W7" "SELECT COUNT(*) FROM runs WHERE status = '"'done'"'")" = 6 ] && [ "$(q "$W7" "SELECT COUNT(*) FROM metrics")" = 24 ]'
check "no reader or writer error" '[ ! -s "$T/e7r" ] && ! grep -qi "error\|locked\|failed" "$T/e7"'
check "every run has its own stamped folder" '[ "$(ls "$W7"/runs/*/RUN | wc -l)" = 6 ]'

echo "$pass passed, $fail failed"
