#!/usr/bin/env bash
# Data-parallel training under mpirun (issue 23): `mpirun -n 2 lorabench train` gives the
# same loss at every step as one process (1e-4 relative; LoRA and full fine-tuning, uneven
# shares of the batch, grad_accum 2; pretraining too); a cancel stops every rank; a NaN
# fails the run on every rank; a rank killed with SIGKILL (rank 1, then rank 0) leaves the
# run interrupted and the store intact, and resume (without mpirun, and with it) finishes
# it with the loss of an uninterrupted run. Every mpirun has a timeout: a hang is a failure.
set -u
B="$1/lorabench"
if ! command -v mpirun > /dev/null; then
    echo "test_mpi: skipped: mpirun is missing (make deps installs openmpi-bin)"
    echo "0 passed, 0 failed"; exit 0
fi
if ldd "$B" 2>/dev/null | grep -q libasan; then
    echo "test_mpi: skipped under ASan: OpenMPI's own allocations are reported as leaks"
    echo "0 passed, 0 failed"; exit 0
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. tests/e2e_common.sh
MPI="mpirun -n 2 --oversubscribe --allow-run-as-root --bind-to none"
spec() {  # name method batch_size steps lr
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$M", "method": "$2",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": { "r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"] },
  "train": { "max_steps": $4, "batch_size": $3, "grad_accum": 2, "lr": $5, "seed": 7, "checkpoint_every": 2,
             "precision": "fp32" },
  "eval": { "limit": 2, "max_new_tokens": 4 },
  "threads": 1 }
JSON
}
losses() { "$B" export --what metrics --format csv --workspace "$1" | awk -F, -v id="$2" '$1 == id {print $2, $4}'; }
# the same steps, each loss within 1e-4 relative
same_losses() {
    awk 'NR == FNR {a[$1] = $2; n++; next} {if (!($1 in a)) exit 1; d = a[$1] - $2; if (d < 0) d = -d;
         if (d > 1e-4 * (a[$1] < 0 ? -a[$1] : a[$1])) exit 1; m++} END {exit !(n > 0 && n == m)}' "$1" "$2"
}
final_loss() { "$B" runs --json --filter "id=$2" --workspace "$1" | sed 's/.*"loss":\([^,]*\),.*/\1/'; }
close() { awk -v a="$1" -v b="$2" 'BEGIN{d=a-b; if(d<0)d=-d; exit !(a != "" && d<=1e-4*(b<0?-b:b))}'; }
status_of() { "$B" runs --json --filter "id=$2" --workspace "$1" | sed 's/.*"status":"\([a-z]*\)".*/\1/'; }

# 1. The same global batches on one process and on two ranks: batch 5 (shares of 2 and 3
# rows; the last batch of the epoch has 3) for LoRA, 3 for full fine-tuning, 8 steps over
# an epoch's end.
for method in lora full; do
    bs=5; [ $method = full ] && bs=3
    spec $method $method $bs 8 0.003
    "$B" train "$T/$method.json" --workspace "$T/one-$method" > /dev/null 2>&1
    timeout 120 $MPI "$B" train "$T/$method.json" --workspace "$T/two-$method" > "$T/out" 2> "$T/err"; rc=$?
    check "$method: mpirun -n 2 exits 0 ($rc)" '[ $rc -eq 0 ]'
    check "$method: one result line, from rank 0" '[ $(grep -c "run 1 $method: done" "$T/out") -eq 1 ]'
    losses "$T/one-$method" 1 > "$T/one.txt"; losses "$T/two-$method" 1 > "$T/two.txt"
    check "$method: 8 steps, each loss as one process's (1e-4)" '[ $(wc -l < "$T/two.txt") -eq 8 ] && same_losses "$T/one.txt" "$T/two.txt"'
    [ -n "${VERBOSE:-}" ] && paste "$T/one.txt" "$T/two.txt"
    check "$method: rank 0 alone wrote the result" '"$B" show 1 --workspace "$T/two-$method" | grep -q "artifact $([ $method = lora ] && echo adapter || echo model) "'
    check "$method: integrity_check ok" '[ "$(sqlite3 "$T/two-$method/lorabench.db" "PRAGMA integrity_check")" = ok ]'
done
ref=$(final_loss "$T/one-lora" 1)
# pretraining: span corruption draws each example's noise from (seed, micro batch, example),
# so a rank's share is corrupted as in one process
"$B" pretrain "$T/full.json" --workspace "$T/one-pre" > /dev/null 2>&1
timeout 120 $MPI "$B" pretrain "$T/full.json" --workspace "$T/two-pre" > /dev/null 2>&1; rc=$?
losses "$T/one-pre" 1 > "$T/one.txt"; losses "$T/two-pre" 1 > "$T/two.txt"
check "pretrain: mpirun -n 2 exits 0 ($rc), 8 steps, each loss as one process's (1e-4)" \
    '[ $rc -eq 0 ] && [ $(wc -l < "$T/two.txt") -eq 8 ] && same_losses "$T/one.txt" "$T/two.txt"'

# 2. NaN: every rank stops, the run fails with the message, nothing hangs.
spec nan lora 4 4 1e30
timeout 60 $MPI "$B" train "$T/nan.json" --workspace "$T/nan" > /dev/null 2> "$T/err"; rc=$?
check "NaN: mpirun ends, not by the timeout ($rc)" '[ $rc -ne 0 ] && [ $rc -ne 124 ]'
check "NaN: the run failed naming the NaN" '"$B" runs --json --workspace "$T/nan" | grep -q "\"status\":\"failed\"" && grep -q "NaN" "$T/err"'

# 3. Cancel (SIGTERM to rank 0, the pid in the store): every rank stops after the step,
# the run is cancelled, and rank 0 exits 143 as a foreground train does (mpirun passes it
# on); resume under mpirun finishes it.
W3="$T/ws3"
spec lora lora 5 8 0.003
LORABENCH_TEST_STEP_DELAY_MS=200 timeout 60 $MPI "$B" train "$T/lora.json" --workspace "$W3" > /dev/null 2>&1 &
job=$!
for _ in $(seq 1 300); do
    s=$("$B" runs --json --filter "id=1" --workspace "$W3" 2>/dev/null)
    printf '%s' "$s" | grep -q '"steps":[2-9]' && break
    sleep 0.05
done
"$B" cancel 1 --workspace "$W3" > /dev/null
wait $job; rc=$?
check "cancel: mpirun exits 143, process 0's status after the SIGTERM ($rc)" '[ $rc -eq 143 ]'
check "cancel: the run is cancelled" '[ "$(status_of "$W3" 1)" = cancelled ]'
timeout 60 $MPI "$B" resume 1 --workspace "$W3" > /dev/null 2>&1; rc=$?
got=$(final_loss "$W3" 1)
check "cancel: resume under mpirun finishes with the loss $got of one process ($ref)" '[ $rc -eq 0 ] && [ "$(status_of "$W3" 1)" = done ] && close "$got" "$ref"'

# 4. SIGKILL of one rank: mpirun ends the job, the run is interrupted, the store intact;
# resume without mpirun (rank 1 killed) and with it (rank 0 killed) finishes the run.
for victim in 1 0; do
    W4="$T/kill$victim"
    LORABENCH_TEST_STEP_DELAY_MS=200 timeout 60 $MPI "$B" train "$T/lora.json" --workspace "$W4" > /dev/null 2>&1 &
    job=$!
    for _ in $(seq 1 300); do
        s=$("$B" runs --json --filter "id=1" --workspace "$W4" 2>/dev/null)
        printf '%s' "$s" | grep -q '"steps":[3-9]' && break
        sleep 0.05
    done
    pid0=$(printf '%s' "$s" | sed 's/.*"pid":\([0-9]*\).*/\1/')
    mpi=$(pgrep -P "$job" | head -n 1)
    pid1=$(pgrep -P "$mpi" | grep -vx "$pid0" | head -n 1)
    if [ $victim = 1 ]; then kill -9 "$pid1"; else kill -9 "$pid0"; fi
    wait $job; rc=$?
    for _ in $(seq 1 100); do  # the other rank may take a moment after mpirun to end
        kill -0 "$pid0" 2>/dev/null || kill -0 "$pid1" 2>/dev/null || break
        sleep 0.1
    done
    check "kill rank $victim: mpirun ends the job and every rank, no hang ($rc)" \
        '[ $rc -ne 124 ] && [ -n "$pid1" ] && ! kill -0 "$pid0" 2>/dev/null && ! kill -0 "$pid1" 2>/dev/null'
    sleep 2.2  # a heartbeat older than LB_STALE_SECONDS
    check "kill rank $victim: the run is interrupted" '[ "$(status_of "$W4" 1)" = interrupted ]'
    check "kill rank $victim: integrity_check ok" '[ "$(sqlite3 "$W4/lorabench.db" "PRAGMA integrity_check")" = ok ]'
    if [ $victim = 1 ]; then
        timeout 60 "$B" resume 1 --workspace "$W4" > /dev/null 2>&1; rc=$?
    else
        timeout 60 $MPI "$B" resume 1 --workspace "$W4" > /dev/null 2>&1; rc=$?
    fi
    got=$(final_loss "$W4" 1)
    check "kill rank $victim: resume $([ $victim = 1 ] && echo without || echo with) mpirun finishes with the loss $got of one process ($ref)" \
        '[ $rc -eq 0 ] && [ "$(status_of "$W4" 1)" = done ] && close "$got" "$ref"'
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
