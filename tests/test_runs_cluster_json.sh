#!/usr/bin/env bash
# `runs --json` lists a cluster sweep's tasks not imported yet after the runs, as objects with
# "kind": "cluster_task", without a Slurm cluster: sbatch and squeue are small scripts on PATH
# (sbatch answers a job id; squeue prints the queue the test writes into $T/queue, or fails as
# with a controller that is down), task 0 is trained here as the job's script would, task 1
# has a progress line in its output, task 2 waits. tests/test_slurm.sh does the same on a real
# one-node cluster.
set -u
B="$1/lorabench"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. tests/e2e_common.sh
mkdir -p "$T/bin"
printf '#!/bin/sh\necho 4711\n' > "$T/bin/sbatch"
cat > "$T/bin/squeue" <<'SH'
#!/bin/sh
[ -f "$QUEUE" ] || { echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"; exit 1; }
cat "$QUEUE"
SH
chmod +x "$T/bin/sbatch" "$T/bin/squeue"
export PATH="$T/bin:$PATH" QUEUE="$T/queue"
cat > "$T/grid.json" <<JSON
{ "name": "cl", "base_model": "$M", "method": "lora",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": { "r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"] },
  "train": { "max_steps": 2, "batch_size": 4, "lr": 0.003, "seed": 7 },
  "eval": { "limit": 2, "max_new_tokens": 4 },
  "threads": 1, "grid": { "lora.r": [1, 2, 4] } }
JSON
# py FILE EXPR: EXPR over the JSON array d read from FILE, printed as JSON (null for None)
py() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(eval(sys.argv[2])))' "$1" "$2"; }
q() { sqlite3 "$W/lorabench.db" "$1"; }

"$B" sweep "$T/grid.json" --slurm --workspace "$W" > "$T/sub" 2>&1; rc=$?
check "sweep --slurm with the stand-in sbatch records job 4711" '[ $rc -eq 0 ] && grep -q "as job 4711" "$T/sub"'
D="$W/sweeps/1"
"$B" train "$D/point-0.json" --workspace "$D/task-0" > "$D/task-0.out" 2>&1
printf 'run 1: loading model, tokenizer and data...\n\rrun 1  step 2/6  loss 5.1000  lr 1.0e-03  9 tok/s  ETA 9s   \rrun 1  step 3/6  loss 4.4123  lr 1.0e-03  9 tok/s  ETA 6s   ' > "$D/task-1.out"
printf '4711 1 RUNNING\n4711 2 PENDING\n' > "$T/queue"

# 1. Task 0 left the queue with its run done: imported, a run. Tasks 1 and 2 follow as tasks.
"$B" runs --json --workspace "$W" > "$T/j1" 2> "$T/e1"; rc=$?
check "runs --json is one JSON array: the imported run, then the two tasks" \
    '[ $rc -eq 0 ] && [ "$(py "$T/j1" "len(d)")" = 3 ] && grep -q "imported 1 finished cluster run" "$T/e1"'
check "the run's object is as before: no kind, its id, name and status" \
    '[ "$(py "$T/j1" "[d[0].get(k) for k in (\"kind\", \"id\", \"name\", \"status\")]")" = "[null, 1, \"cl-r1\", \"done\"]" ]'
check "the running task: kind, id null, its point's name, status, step 3 of 6 and the loss of its output's last line" \
    '[ "$(py "$T/j1" "[d[1][k] for k in (\"kind\", \"id\", \"name\", \"status\", \"steps\", \"total_steps\", \"loss\")]")" = "[\"cluster_task\", null, \"cl-r2\", \"running\", 3, 6, 4.4123]" ]'
check "and its sweep, job, array task and output file" \
    '[ "$(py "$T/j1" "[d[1][k] for k in (\"sweep\", \"job\", \"task\", \"output\")]")" = "[1, \"4711\", 1, \"$D/task-1.out\"]" ]'
check "the pending task: no step or loss yet (null)" \
    '[ "$(py "$T/j1" "[d[2][k] for k in (\"kind\", \"name\", \"status\", \"steps\", \"total_steps\", \"loss\", \"task\")]")" = "[\"cluster_task\", \"cl-r4\", \"pending\", null, null, null, 2]" ]'
"$B" runs --workspace "$W" > "$T/t1" 2> /dev/null
check "the table shows the same tasks" \
    'grep -Eq "^ +1 +4711 +1 +cl-r2 +running +3/6 +4\.4123 " "$T/t1" && grep -Eq "^ +1 +4711 +2 +cl-r4 +pending " "$T/t1"'
"$B" runs --json --filter "id=1" --workspace "$W" > "$T/j2" 2> /dev/null
check "--filter selects runs only: no task objects" '[ "$(py "$T/j2" "[r[\"id\"] for r in d]")" = "[1]" ]'
"$B" runs --json --sort r --desc --workspace "$W" > "$T/j3" 2> /dev/null
check "--sort orders the runs; the tasks still follow them" \
    '[ "$(py "$T/j3" "[r.get(\"task\", r[\"id\"]) for r in d]")" = "[1, 1, 2]" ] && [ "$(py "$T/j3" "d[0][\"id\"]")" = 1 ]'

# 2. squeue cannot be asked: tasks 1 and 2 are unknown, nothing is imported, the JSON stays
# valid; task 0, imported already, is its run only; a sentence names squeue's failure.
rm "$T/queue"
"$B" runs --json --workspace "$W" > "$T/j4" 2> "$T/e4"; rc=$?
check "squeue failing: tasks 1 and 2 listed as unknown (task 1 still with its step), the array valid" \
    '[ $rc -eq 0 ] && [ "$(py "$T/j4" "[(t[\"task\"], t[\"status\"], t[\"steps\"]) for t in d if t.get(\"task\") in (1, 2)]")" = "[[1, \"unknown\", 3], [2, \"unknown\", null]]" ] &&
     [ "$(q "SELECT COUNT(*) FROM runs")" = 1 ]'
check "squeue failing: the imported task 0 is not listed again as a task" \
    '[ "$(py "$T/j4" "[r.get(\"kind\", \"run\") + \" \" + r[\"name\"] for r in d]")" = "[\"run cl-r1\", \"cluster_task cl-r2\", \"cluster_task cl-r4\"]" ]'
check "squeue failing: stderr says so, with squeue's own message and the two unknown tasks" \
    'grep -q "cluster sweeps: squeue failed: slurm_load_jobs error: Unable to contact slurm controller (connect failure); the state of 2 cluster tasks is unknown" "$T/e4"'

# 3. The queue empties: task 1's run finished and is imported; task 2 never ran and is listed
# as failed by the listing that sees it end (the same call imports and lists), and the sweep
# is merged.
"$B" train "$D/point-1.json" --workspace "$D/task-1" > /dev/null 2>&1
: > "$T/queue"
"$B" runs --json --workspace "$W" > "$T/j5" 2> /dev/null
check "once the tasks left the queue: two runs, then the task that never ran as failed; the sweep merged" \
    '[ "$(py "$T/j5" "[r.get(\"kind\", \"run\") + \" \" + r[\"name\"] + \" \" + r[\"status\"] for r in d]")" = "[\"run cl-r1 done\", \"run cl-r2 done\", \"cluster_task cl-r4 failed\"]" ] &&
     [ "$(q "SELECT state FROM cluster_jobs")" = merged ]'
# a workspace without cluster sweeps: the array of runs, nothing else
"$B" runs --json --workspace "$D/task-0" > "$T/j6" 2> /dev/null
check "a workspace without cluster sweeps: only its runs" '[ "$(py "$T/j6" "[r.get(\"kind\", r[\"id\"]) for r in d]")" = "[1]" ]'
echo "$pass passed, $fail failed"
