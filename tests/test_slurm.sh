#!/usr/bin/env bash
# A sweep on a real Slurm cluster (issue 23): the test starts a one-node cluster on this
# machine (tests/slurm_cluster.sh), submits a 4-point sweep with `sweep --slurm`, watches
# `runs` show its tasks pending and running with their loss, and checks that it ends with
# the four runs in the workspace (curves, ROUGE, samples, adapters) equal to the same sweep
# run locally: same names, same final losses and ROUGE. Then import by hand (idempotent, a
# deleted run stays deleted, bad folders refused) and cancelling a cluster sweep (scancel).
# Skipped, saying why, where Slurm and munge cannot be installed.
set -u
B="$(cd "$1" && pwd)/lorabench"
T=$(mktemp -d)
. tests/slurm_cluster.sh
reason=$(slurm_skip_reason)
if [ -n "$reason" ]; then
    echo "test_slurm skipped: $reason"
    echo "0 passed, 0 failed"
    rm -rf "$T"
    exit 0
fi
trap 'slurm_stop; rm -rf "$T"' EXIT
trap 'exit 1' INT TERM
t_start=$(date +%s)
. tests/e2e_common.sh
if ! slurm_start > "$T/cluster.log" 2>&1; then
    echo "FAIL the test's Slurm cluster did not start: $(cat "$T/cluster.log")"
    echo "0 passed, 1 failed"
    exit 1
fi
cat > "$T/grid.json" <<JSON
{ "name": "cl", "base_model": "$M", "method": "lora",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": { "r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"] },
  "train": { "max_steps": 6, "batch_size": 4, "lr": 0.003, "seed": 7, "checkpoint_every": 2 },
  "eval": { "limit": 6, "max_new_tokens": 8 },
  "threads": 1, "grid": { "lora.r": [1, 2, 4, 8] } }
JSON
q() { sqlite3 "$W/lorabench.db" "$1"; }

# 1. --dry-run prints the job-array script and submits nothing; --ntasks > 1 is an srun line.
"$B" sweep "$T/grid.json" --slurm --dry-run --workspace "$W" > "$T/dry" 2>&1; rc=$?
check "sweep --slurm --dry-run prints a 4-task array script" \
    '[ $rc -eq 0 ] && grep -q "^#SBATCH --array=0-3$" "$T/dry" && grep -q "^#SBATCH --cpus-per-task=1$" "$T/dry" && grep -q " train \"\$dir/point-\$i.json\" --workspace \"\$dir/task-\$i\"$" "$T/dry"'
check "--dry-run submits nothing" '[ ! -e "$W/lorabench.db" ] && [ -z "$(squeue -h)" ]'
"$B" sweep "$T/grid.json" --slurm --dry-run --ntasks 2 --partition lbtest --time 5:00 > "$T/dry2" 2>&1
check "--ntasks 2 runs each point through srun; --partition and --time are #SBATCH lines" \
    'grep -q "^exec srun --ntasks=2 --cpus-per-task=1 " "$T/dry2" && grep -q "^#SBATCH --partition=lbtest$" "$T/dry2" && grep -q "^#SBATCH --time=5:00$" "$T/dry2"'
"$B" sweep "$T/grid.json" --slurm --ntasks 0 > /dev/null 2> "$T/err"; rc=$?
check "--ntasks 0 is refused, naming the option" '[ $rc -eq 2 ] && grep -q "ntasks takes a whole number" "$T/err"'
"$B" sweep "$T/grid.json" --slurm --time "1 day" > /dev/null 2> "$T/err"; rc=$?
check "a --time with a space is refused" '[ $rc -eq 2 ] && grep -q "is not a Slurm value" "$T/err"'

"$B" sweep "$T/grid.json" --slurm --partition nosuch --workspace "$T/wbad" > /dev/null 2> "$T/err"; rc=$?
check "a partition sbatch refuses: its message, and no sweep or folder left behind" \
    '[ $rc -eq 1 ] && grep -q "sbatch refused .*job.sbatch: .*[Pp]artition" "$T/err" && [ "$(sqlite3 "$T/wbad/lorabench.db" "SELECT COUNT(*) FROM sweeps")" = 0 ] && [ ! -e "$T/wbad/sweeps/1" ]'

# 2. Submitted: the tasks show in runs while they wait and run (slowed steps, so there is
# a moment to see), then become the workspace's runs.
(cd "$T" && LORABENCH_TEST_STEP_DELAY_MS=500 "$B" sweep grid.json --slurm --workspace "$W") > "$T/sub" 2>&1; rc=$?
check "sweep --slurm submits the job array and says so" '[ $rc -eq 0 ] && grep -q "^sweep 1: 4 tasks submitted to Slurm as job [0-9]" "$T/sub"'
check "the sweep and its job id are recorded" \
    '[ "$(q "SELECT n_tasks || state FROM cluster_jobs WHERE sweep_id = 1")" = 4submitted ] && [ -n "$(q "SELECT job_id FROM cluster_jobs")" ] && [ -f "$W/sweeps/1/job.sbatch" ]'
[ $rc -eq 0 ] || { echo "    sweep --slurm said: $(cat "$T/sub")"; echo "    $(tail -n 3 "$SLURM_DIR/slurmctld.log")"; }
seen_pending=0 seen_running=0 seen_json=0 done_n=0
for _ in $(seq 400); do
    [ $rc -eq 0 ] || break
    "$B" runs --workspace "$W" > "$T/runs" 2> /dev/null
    grep -Eq "^ +1 +[0-9]+ +[0-3] +cl-r[0-9]+ +pending " "$T/runs" && seen_pending=1
    grep -Eq "^ +1 +[0-9]+ +[0-3] +cl-r[0-9]+ +running +[1-6]/6 +[0-9]+\.[0-9]{4} " "$T/runs" && seen_running=1
    "$B" runs --json --workspace "$W" > "$T/runsj" 2> /dev/null
    grep -Eq '"kind":"cluster_task","id":null,"name":"cl-r[0-9]+","status":"running","steps":[1-6],"total_steps":6,"loss":[0-9.]+,"sweep":1,"job":"[0-9]+","task":[0-3],' "$T/runsj" && seen_json=1
    done_n=$(q "SELECT COUNT(*) FROM runs WHERE status = 'done' AND sweep_id = 1")
    [ "$done_n" -eq 4 ] && [ "$(q "SELECT state FROM cluster_jobs")" = merged ] && break
    sleep 0.3
done
check "runs shows tasks pending (2 cores, 4 one-core tasks)" '[ $seen_pending -eq 1 ]'
check "runs shows a task running with its step and live loss" '[ $seen_running -eq 1 ]'
check "runs --json lists a running task (kind cluster_task) with its step and live loss" '[ $seen_json -eq 1 ]'
check "the sweep ends with its 4 runs done in the workspace, and is marked merged" \
    '[ "$done_n" -eq 4 ] && [ "$(q "SELECT state FROM cluster_jobs")" = merged ]'
# The loop's last listing can predate the import: runs --json or the next runs in the same
# round may be the call that imports the last task. List once more, after the merge.
"$B" runs --workspace "$W" > "$T/runs" 2> /dev/null
check "runs no longer lists cluster tasks once all are imported" '! grep -q "cluster tasks" "$T/runs"'
check "each run has its curve (6 steps) and an evaluation with samples" \
    '[ "$(q "SELECT COUNT(*) FROM metrics")" = 24 ] && [ "$(q "SELECT COUNT(*) FROM evals WHERE rouge1 IS NOT NULL")" = 4 ] && [ "$(q "SELECT COUNT(*) FROM samples")" = 24 ]'
check "each run's adapter was copied into runs/<id>/ and its artifact points there (same sha256)" \
    'ok=1; for id in 1 2 3 4; do f="$W/runs/$id/adapter/adapter_model.safetensors"; [ -f "$f" ] || ok=0; [ "$(q "SELECT path || sha256 FROM artifacts WHERE run_id = $id AND kind = '"'adapter'"'")" = "$f$(sha256sum "$f" | cut -c1-64)" ] || ok=0; done; [ $ok -eq 1 ]'

# 3. The same sweep run here: the same runs, final losses and ROUGE.
"$B" sweep "$T/grid.json" --workspace "$T/local" > /dev/null 2>&1
summary() { sqlite3 "$1/lorabench.db" "SELECT name, printf('%.6f', final_loss), printf('%.6f', rouge1), step FROM runs_view ORDER BY name"; }
summary "$W" > "$T/sum_cluster"
summary "$T/local" > "$T/sum_local"
check "the cluster sweep equals the local one (names, final losses, ROUGE-1, steps)" \
    '[ "$(wc -l < "$T/sum_cluster")" -eq 4 ] && cmp -s "$T/sum_cluster" "$T/sum_local"'
[ "$fail" -eq 0 ] || { echo "cluster:"; cat "$T/sum_cluster"; echo "local:"; cat "$T/sum_local"; }

# 4. import by hand: idempotent; a deleted run stays deleted; bad folders refused.
"$B" import "$W"/sweeps/1/task-*/ --workspace "$W" > "$T/imp" 2>&1; rc=$?
check "importing the sweep's tasks again adds nothing" \
    '[ $rc -eq 0 ] && [ "$(grep -c ": 0 runs imported" "$T/imp")" -eq 4 ] && [ "$(q "SELECT COUNT(*) FROM runs")" = 4 ]'
"$B" rm 2 --workspace "$W" > /dev/null 2>&1
"$B" runs --workspace "$W" > /dev/null 2>&1
"$B" import "$W/sweeps/1/task-1" --workspace "$W" > /dev/null 2>&1
check "a deleted imported run stays deleted" '[ "$(q "SELECT COUNT(*) FROM runs")" = 3 ]'
mkdir -p "$T/w2"
"$B" train "$T/grid.json" --workspace "$T/w2" > /dev/null 2>&1  # w2 has a run named cl-r1 already
"$B" import "$W/sweeps/1/task-0" --workspace "$T/w2" --sweep 7 > /dev/null 2> "$T/err"; rc=$?
check "import --sweep with a sweep the workspace does not have is refused, naming it" \
    '[ $rc -eq 1 ] && grep -q "there is no sweep 7 in" "$T/err" && [ "$(sqlite3 "$T/w2/lorabench.db" "SELECT COUNT(*) FROM runs")" = 4 ]'
"$B" import "$W"/sweeps/1/task-*/ --workspace "$T/w2" --sweep 1 > "$T/imp2" 2>&1; rc=$?
"$B" import "$W"/sweeps/1/task-*/ --workspace "$T/w2" > "$T/imp3" 2>&1
check "import into another workspace copies the 4 runs once, a taken name numbered" \
    '[ $rc -eq 0 ] && [ "$(grep -c ": 1 run imported" "$T/imp2")" -eq 4 ] && [ "$(grep -c ": 0 runs imported" "$T/imp3")" -eq 4 ] && [ "$(sqlite3 "$T/w2/lorabench.db" "SELECT COUNT(*) FROM runs WHERE name = '"'cl-r1 (2)'"' AND sweep_id = 1")" = 1 ]'
"$B" import "$T/nowhere" --workspace "$W" > /dev/null 2> "$T/err"; rc=$?
check "importing a missing folder names it" '[ $rc -eq 1 ] && grep -q "nowhere: no such folder" "$T/err"'
"$B" import "$T" --workspace "$W" > /dev/null 2> "$T/err"; rc=$?
check "importing a folder without a database says what to give" '[ $rc -eq 1 ] && grep -q "has no lorabench.db" "$T/err"'
"$B" import "$W" --workspace "$W" > /dev/null 2> "$T/err"; rc=$?
check "importing a workspace into itself is refused" '[ $rc -eq 1 ] && grep -q "is this workspace" "$T/err"'

# 5. Tasks whose process dies mid-run (as at a time limit or a node failure) leave their
# runs unfinished: once the job left the queue they are imported as interrupted, with an
# error naming the task and its output, and the sweep is merged.
W6="$T/ws6"
(cd "$T" && LORABENCH_TEST_DIE_AFTER=2 "$B" sweep grid.json --slurm --workspace "$W6") > /dev/null 2>&1
q6() { sqlite3 "$W6/lorabench.db" "$1"; }
for _ in $(seq 200); do
    "$B" runs --workspace "$W6" > /dev/null 2>&1
    [ "$(q6 "SELECT state FROM cluster_jobs")" = merged ] && break
    sleep 0.3
done
check "tasks that died mid-run come in as interrupted runs naming their task, and the sweep is merged" \
    '[ "$(q6 "SELECT state FROM cluster_jobs")" = merged ] && [ "$(q6 "SELECT COUNT(*) FROM runs WHERE status = '"'interrupted'"' AND step = 2 AND error LIKE '"'its Slurm task (job %, task _) ended before the run did (time limit, node failure or a kill); see %task-_.out'"'")" = 4 ]'

# 6. The workbench lists a cluster sweep's tasks under the runs and imports them as they
# finish; X (then y) cancels the sweep: scancel empties the queue, the started tasks stop at
# their next step and are imported as cancelled, and the sweep is merged.
W5="$T/ws5"
(cd "$T" && LORABENCH_TEST_STEP_DELAY_MS=2000 "$B" sweep grid.json --slurm --workspace "$W5") > "$T/sub5" 2>&1
job5=$(sqlite3 "$W5/lorabench.db" "SELECT job_id FROM cluster_jobs")
SOCK="lbslurm-$$-$RANDOM"
tm() { tmux -L "$SOCK" "$@"; }
trap 'tm kill-server 2> /dev/null; slurm_stop; rm -rf "$T"' EXIT
tm -f /dev/null new-session -d -s lb -x 140 -y 40 "SLURM_CONF='$SLURM_CONF' '$B' --workspace '$W5'; sleep 60"
wait_screen() {  # REGEX SECONDS
    for _ in $(seq $((${2} * 5))); do
        tm capture-pane -p -t lb > "$T/screen" 2> /dev/null
        grep -qE -- "$1" "$T/screen" && return 0
        sleep 0.2
    done
    echo "  (timed out waiting for /$1/; the screen was:)"; sed 's/^/  | /' "$T/screen"
    return 1
}
check "the workbench lists the cluster tasks, one running with its step and loss" \
    'wait_screen "cluster tasks not imported yet: 4" 30 && wait_screen "task 0  cl-r1 +running +step [1-6]/6 +loss [0-9]+\.[0-9]{4}" 40'
tm send-keys -t lb X
check "X asks before cancelling the cluster sweep" 'wait_screen "Cancel cluster sweep 1 \(scancel job $job5\)\? \[y/N\]" 10'
tm send-keys -t lb y
check "y runs scancel and the workbench says so" 'wait_screen "cluster sweep 1 cancelled \(scancel\)" 10'
for _ in $(seq 100); do [ -z "$(squeue -h -j "$job5" 2> /dev/null)" ] && break; sleep 0.2; done
check "the cancelled job leaves the queue" '[ -z "$(squeue -h -j "$job5" 2> /dev/null)" ]'
q5() { sqlite3 "$W5/lorabench.db" "$1"; }
for _ in $(seq 100); do [ "$(q5 "SELECT state FROM cluster_jobs")" = merged ] && break; sleep 0.2; done
check "the cancelled sweep is merged: its started runs imported as cancelled, no run done" \
    '[ "$(q5 "SELECT state FROM cluster_jobs")" = merged ] && [ "$(q5 "SELECT COUNT(*) FROM runs WHERE status = '"'cancelled'"'")" -ge 1 ] && [ "$(q5 "SELECT COUNT(*) FROM runs WHERE status != '"'cancelled'"'")" = 0 ]'
check "the workbench shows the imported runs as cancelled" 'wait_screen "^ +[0-9]+ cl-r[0-9]+ +cancelled " 10'
tm kill-server 2> /dev/null

echo "test_slurm: $(($(date +%s) - t_start)) s" >&2
echo "$pass passed, $fail failed"
