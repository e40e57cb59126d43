#!/usr/bin/env bash
# Fault tests through the command line (issue 11), on the fixture model t5-gated-a:
#  1. 10 workers writing at once, killed with SIGKILL at random moments: integrity_check ok,
#     runs completed before the kills unchanged, every metric row committed before a kill
#     still there, each killed run interrupted, and `resume` finishes it with the loss of
#     an uninterrupted run.
#  2. A disk that fills up (a file-size limit, `ulimit -f`; the worker must ignore SIGXFSZ
#     itself): status failed with "no space left" and the path, the database consistent, no
#     partial or temporary file left; resume finishes once there is space. merge likewise.
#  3. A NaN / infinite loss: status failed, the step in the message, the steps before kept.
#  4. A read-only workspace (as user nobody), a locked database (an sqlite3 shell holding
#     BEGIN EXCLUSIVE; LORABENCH_BUSY_TIMEOUT_MS shortens the wait), a missing base model,
#     a deleted adapter file: one clear sentence naming the thing, exit status non-zero,
#     nothing stored damaged.
#  5. A run that cannot fit in memory: refused before training, with the numbers.
set -u
B="$1/lorabench"
case "$B" in /*) ;; *) B="$PWD/$B" ;; esac
T=$(mktemp -d)
cleanup() {
    jobs -p | while read -r p; do kill "$p" 2>/dev/null; done  # a lock holder still sleeping
    rm -rf "$T"
}
trap cleanup EXIT
. tests/e2e_common.sh
SMALL_LORA='{ "r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"] }'
spec() {  # file model steps extra-train-json [lora-json]; $LR overrides the learning rate
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$2", "method": "lora",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": ${5:-$SMALL_LORA},
  "train": { "max_steps": $3, "batch_size": 4, "lr": ${LR:-0.003}, "seed": 7, "checkpoint_every": 4 $4 },
  "eval": { "limit": 4, "max_new_tokens": 6 },
  "threads": 1 }
JSON
}
q() { sqlite3 -cmd ".timeout 5000" "$W/lorabench.db" "$@"; }
q2() { sqlite3 -cmd ".timeout 5000" "$W2/lorabench.db" "$@"; }
intact() { [ "$(sqlite3 -cmd ".timeout 5000" "$1/lorabench.db" "PRAGMA integrity_check")" = ok ]; }
status_of() { q "SELECT status FROM runs WHERE id = $1"; }
error_of() { q "SELECT error FROM runs WHERE id = $1"; }
# Everything stored about runs 1 and 2 (completed before any fault), as one digest.
snapshot() {
    q "SELECT id, name, status, step, final_loss, error, trainable_params FROM runs WHERE id <= 2;
       SELECT * FROM metrics WHERE run_id <= 2 ORDER BY run_id, step;
       SELECT * FROM evals WHERE run_id <= 2 ORDER BY id;
       SELECT s.* FROM samples s JOIN evals e ON e.id = s.eval_id WHERE e.run_id <= 2 ORDER BY 1, 2;
       SELECT run_id, kind, path, bytes, sha256 FROM artifacts WHERE run_id <= 2 ORDER BY id;" | sha256sum
}
same_loss() { awk -v a="$1" -v b="$2" 'BEGIN{d=a-b; if(d<0)d=-d; exit !(a!="" && d<=1e-6*(b<0?-b:b)+1e-9)}'; }
t_start=$(date +%s)

# ---- 0. Two runs completed before any fault ----------------------------------------------
STEPS=100
spec kill "$M" $STEPS ""
spec small "$M" 6 ""
"$B" train "$T/kill.json" --workspace "$W" --json > /dev/null 2>&1
"$B" train "$T/small.json" --workspace "$W" --json > /dev/null 2>&1
check "two reference runs done" '[ "$(status_of 1)" = done ] && [ "$(status_of 2)" = done ]'
ref=$(q "SELECT final_loss FROM runs WHERE id = 1")
snap0=$(snapshot)
ADAPTER1="$W/runs/1/adapter"

# ---- 1. 10 concurrent workers killed with SIGKILL at random moments ----------------------
ids=()
for i in $(seq 1 10); do
    ids+=("$(LORABENCH_TEST_STEP_DELAY_MS=40 "$B" train "$T/kill.json" --detach --workspace "$W")")
done
# Each worker dies at its own random moment, 0.1 to 2.5 s after it started running: while
# loading, between steps, while a batch of metrics or a checkpoint is being written.
declare -A deadline killed before_rows pid_of
t0=$(date +%s%N)
for id in "${ids[@]}"; do deadline[$id]=$(( t0 / 1000000 + 100 + RANDOM % 2400 )); done
left=10
for _ in $(seq 1 400); do
    [ $left -eq 0 ] && break
    now=$(( $(date +%s%N) / 1000000 ))
    for id in "${ids[@]}"; do
        [ -n "${killed[$id]:-}" ] && continue
        [ "$now" -lt "${deadline[$id]}" ] && continue
        st=$(status_of "$id")
        if [ "$st" = done ]; then killed[$id]=finished; left=$((left - 1)); continue; fi
        [ "$st" = running ] || continue
        pid=$(q "SELECT pid FROM runs WHERE id = $id")
        [ -n "$pid" ] || continue
        # Rows committed up to now (a kill can only come later), with their values.
        q "SELECT step, loss FROM metrics WHERE run_id = $id ORDER BY step" > "$T/before.$id"
        before_rows[$id]=$(wc -l < "$T/before.$id")
        kill -9 "$pid" 2>/dev/null
        killed[$id]=yes; pid_of[$id]=$pid; left=$((left - 1))
    done
    sleep 0.02
done
n_killed=0
for id in "${ids[@]}"; do [ "${killed[$id]:-}" = yes ] && n_killed=$((n_killed + 1)); done
check "at least 8 of 10 workers killed mid-run ($n_killed)" '[ $n_killed -ge 8 ]'
# The heartbeat goes stale 2 s after the last commit; `runs` then marks the runs interrupted.
for _ in $(seq 1 50); do
    "$B" runs --workspace "$W" > /dev/null 2>&1
    [ "$(q "SELECT COUNT(*) FROM runs WHERE status = 'running'")" = 0 ] && break
    sleep 0.2
done
check "integrity_check ok after the kills" 'intact "$W"'
check "completed runs unchanged after the kills" '[ "$(snapshot)" = "$snap0" ]'
for id in "${ids[@]}"; do
    [ "${killed[$id]:-}" = yes ] || continue
    q "SELECT step, loss FROM metrics WHERE run_id = $id ORDER BY step" > "$T/after.$id"
    after=$(wc -l < "$T/after.$id")
    check "run $id: interrupted" '[ "$(status_of "$id")" = interrupted ]'
    check "run $id: ${before_rows[$id]} committed rows kept ($after after the kill)" \
        '[ -z "$(comm -23 "$T/before.$id" "$T/after.$id")" ] && [ "$after" -ge "${before_rows[$id]}" ]'
    check "run $id: metric steps 1..$after without holes" \
        '[ "$(q "SELECT COUNT(*) = COALESCE(MAX(step), 0) FROM metrics WHERE run_id = $id")" = 1 ]'
    check "run $id: message names the worker" 'error_of "$id" | grep -q "pid ${pid_of[$id]}.*resume $id"'
done
# A worker killed inside a file write leaves NAME.tmp.PID; the next worker of the run must
# remove it. One is planted where a kill may or may not have left one.
first_killed=""
for id in "${ids[@]}"; do [ "${killed[$id]:-}" = yes ] && [ -z "$first_killed" ] && first_killed=$id; done
[ -n "$first_killed" ] && : > "$W/runs/$first_killed/checkpoint.safetensors.tmp.99999"
for id in "${ids[@]}"; do
    [ "${killed[$id]:-}" = yes ] || continue
    "$B" resume "$id" --workspace "$W" --json > "$T/resume.$id" 2>&1
    got=$(q "SELECT final_loss FROM runs WHERE id = $id")
    check "run $id: resume finishes it (loss $got = $ref)" \
        '[ "$(status_of "$id")" = done ] && same_loss "$got" "$ref"'
    check "run $id: $STEPS metric rows after resume" \
        '[ "$(q "SELECT COUNT(*) || \",\" || MAX(step) FROM metrics WHERE run_id = $id")" = "$STEPS,$STEPS" ]'
done
check "integrity_check ok after the resumes" 'intact "$W"'
check "no temporary file left after the resumes" '[ -z "$(find "$W" -name "*.tmp.*")" ]'
n_runs=$(q "SELECT COUNT(*) FROM runs")

# ---- 2. A disk that fills up --------------------------------------------------------------
# A workspace of its own, so that the database (a few pages) lies well under the limit
# (256 KB) while the checkpoint of this bigger adapter (1 MB) does not. RLIMIT_FSIZE stops
# writes at any offset past the limit, so a database bigger than it could not even be read
# back into place.
W2="$T/full"
"$B" runs --workspace "$W2" > /dev/null 2>&1
spec big "$M" 8 "" '{ "r": 16, "alpha": 16, "targets": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"] }'
# The worker starts under the limit with SIGXFSZ at its default action (kill): it must
# ignore it itself, or it dies without a status.
big=$( (ulimit -f 256; "$B" train "$T/big.json" --detach --workspace "$W2") )
for _ in $(seq 1 100); do
    case "$(q2 "SELECT status FROM runs WHERE id = $big")" in queued|running) sleep 0.1 ;; *) break ;; esac
done
RD="$W2/runs/$big"
check "disk full: worker stops with status failed" '[ "$(q2 "SELECT status FROM runs WHERE id = $big")" = failed ]'
check "disk full: message says no space left and names the file" \
    'q2 "SELECT error FROM runs WHERE id = $big" | grep -q "no space left writing $RD/checkpoint.safetensors"'
check "disk full: worker.log has the message" 'grep -q "no space left writing $RD/checkpoint.safetensors" "$RD/worker.log"'
check "disk full: integrity_check ok" 'intact "$W2"'
check "disk full: runs lists the failed run" \
    '"$B" runs --json --workspace "$W2" | grep -q "\"id\":$big,[^}]*\"status\":\"failed\""'
check "disk full: no partial file" '[ ! -e "$RD/checkpoint.safetensors" ] && [ ! -e "$RD/adapter/adapter_model.safetensors" ]'
check "disk full: no temporary file" '[ -z "$(find "$W2" -name "*.tmp.*")" ]'
check "disk full: the 4 steps before the checkpoint are stored" \
    '[ "$(q2 "SELECT COUNT(*) FROM metrics WHERE run_id = $big")" = 4 ]'
# Space is back: resume finishes the run and its adapter loads.
"$B" resume "$big" --workspace "$W2" --json > /dev/null 2>&1
check "disk full: resume after freeing space finishes" '[ "$(q2 "SELECT status FROM runs WHERE id = $big")" = done ]'
"$B" merge --model "$M" --adapter "$RD/adapter" --out "$T/merged_ok" > /dev/null 2>&1
check "disk full: the resumed run's adapter loads and merges" '[ -f "$T/merged_ok/model.safetensors" ]'
# The foreground path: the run in the train process itself, exit status 1 and the message.
(ulimit -f 256; "$B" train "$T/big.json" --workspace "$W2" --json > "$T/out" 2> "$T/err"); rc=$?
check "disk full (foreground): exit 1 and the message" \
    '[ $rc -eq 1 ] && grep -q "no space left writing $W2/runs/[0-9]*/checkpoint.safetensors" "$T/err"'
check "disk full (foreground): integrity_check ok, no temporary file" 'intact "$W2" && [ -z "$(find "$W2" -name "*.tmp.*")" ]'
# merge writes a 1.1 MB model.safetensors: nothing that looks complete may be left.
mkdir -p "$T/merged"
(ulimit -f 512; "$B" merge --model "$M" --adapter "$ADAPTER1" --out "$T/merged" > /dev/null 2> "$T/err"); rc=$?
check "disk full (merge): exit non-zero, no space left naming model.safetensors" \
    '[ $rc -ne 0 ] && grep -q "no space left writing $T/merged/model.safetensors" "$T/err"'
check "disk full (merge): no model.safetensors, no temporary file" \
    '[ ! -e "$T/merged/model.safetensors" ] && [ -z "$(find "$T/merged" -name "*.tmp.*")" ]'

# ---- 3. NaN or infinite loss ----------------------------------------------------------------
for variant in clipped unclipped; do
    extra=', "warmup": 0'
    [ $variant = unclipped ] && extra="$extra, \"max_grad_norm\": 0"
    LR=1e30 spec nan "$M" 20 "$extra"
    "$B" train "$T/nan.json" --workspace "$W" --json > "$T/out" 2> "$T/err"; rc=$?
    id=$(q "SELECT MAX(id) FROM runs")
    last=$(q "SELECT COALESCE(MAX(step), 0) FROM metrics WHERE run_id = $id")
    check "NaN ($variant): exit 1, status failed" '[ $rc -eq 1 ] && [ "$(status_of "$id")" = failed ]'
    check "NaN ($variant): message names NaN/infinite and step $((last + 1))" \
        'error_of "$id" | grep -Eq "(NaN|infinite).* at step $((last + 1))[;,. ]" && grep -q "at step $((last + 1))" "$T/err"'
    check "NaN ($variant): no adapter saved" '[ ! -e "$W/runs/$id/adapter/adapter_model.safetensors" ]'
done
check "NaN: integrity_check ok" 'intact "$W"'

# ---- 4. Read-only workspace, locked database, missing model, deleted adapter -------------
# A run whose worker vanishes after 2 steps (test hook); its model folder goes away below,
# once the heartbeat is stale (2 s), and resume must then name the missing file.
mkdir -p "$T/model"
cp "$M/config.json" "$M/model.safetensors" "$M/tokenizer.json" "$T/model/"
spec gone "$T/model" 6 ""
LORABENCH_TEST_DIE_AFTER=2 "$B" train "$T/gone.json" --workspace "$W" --json > /dev/null 2>&1
gone=$(q "SELECT MAX(id) FROM runs")
# nobody runs a copy of the binary and a spec whose model and data lie in $T: the checkout
# may be in a folder that other users cannot enter (a clone under /root), where exec or the
# spec's base_model would fail with another message. Where a mount namespace can be had,
# nobody's commands run with the checkout hidden under an empty tmpfs (their working folder
# too), so that a file of the checkout that they would need fails here too, not only on such
# a machine.
HIDE=()
case "$T/" in
    "$PWD"/*) ;;  # TMPDIR inside the checkout: nothing can be hidden
    *) if unshare --mount --propagation private sh -c 'mount -t tmpfs none "$0"' "$PWD" 2> /dev/null; then
           HIDE=(unshare --mount --propagation private sh -c 'mount -t tmpfs -o mode=755 none "$0" && cd "$0" && exec "$@"' "$PWD")
       fi ;;
esac
as_nobody() { "${HIDE[@]}" setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
# On a failure: the exit status, and the tasks of user nobody against its process limit
# (root is exempt from RLIMIT_NPROC, nobody is not: OpenBLAS's constructor starting its
# threads fails at the limit, prints two lines of its own and raises SIGINT, status 130).
ro_said() {
    sed "s/^/    stderr: /" "$T/err"
    echo "    exit status $rc; tasks of user nobody: $(grep -ls '^Uid:[[:space:]]*65534[[:space:]]' /proc/[0-9]*/task/[0-9]*/status 2> /dev/null | wc -l), RLIMIT_NPROC $(ulimit -u)"
    false
}
if [ "$(id -u)" = 0 ] && command -v setpriv > /dev/null; then
    [ ${#HIDE[@]} -gt 0 ] || echo "the read-only checks run with the checkout visible (no mount namespace here)"
    chmod 755 "$T"  # the data and specs readable, the workspace still root's
    cp "$B" "$T/lorabench-ro" && chmod 755 "$T/lorabench-ro"
    spec ro "$T/model" 6 ""
    n0=$(q "SELECT COUNT(*) FROM runs")
    as_nobody "$T/lorabench-ro" train "$T/ro.json" --workspace "$W" > /dev/null 2> "$T/err"; rc=$?
    check "read-only: train exits non-zero" '[ $rc -ne 0 ]'
    # On failure its stderr and status are printed (ro_said): it failed once in 373 runs (a
    # fresh Debian 12 chroot) and the output was not kept to tell why.
    check "read-only: one sentence naming the database" \
        '{ [ $(wc -l < "$T/err") -eq 1 ] && grep -q "$W/lorabench.db is read-only" "$T/err"; } || ro_said'
    as_nobody "$T/lorabench-ro" resume 3 --workspace "$W" > /dev/null 2> "$T/err"; rc=$?
    check "read-only: resume exits non-zero naming the database" '{ [ $rc -ne 0 ] && grep -q "$W/lorabench.db" "$T/err"; } || ro_said'
    mkdir -p "$T/ro-new"
    # (train creates a missing workspace; runs would only say there is none)
    as_nobody "$T/lorabench-ro" train "$T/ro.json" --workspace "$T/ro-new/ws" > /dev/null 2> "$T/err"; rc=$?
    check "read-only: a workspace that cannot be created is named" \
        '{ [ $rc -ne 0 ] && grep -q "$T/ro-new/ws" "$T/err" && grep -qi "permission denied" "$T/err"; } || ro_said'
    # A model in a folder nobody cannot enter: named as unreachable, not as missing.
    mkdir -p "$T/private" && chmod 700 "$T/private" && cp -r "$T/model" "$T/private/model"
    spec closed "$T/private/model" 6 ""
    as_nobody "$T/lorabench-ro" train "$T/closed.json" --workspace "$T/ro-new/ws2" > /dev/null 2> "$T/err"; rc=$?
    check "read-only: a model in a folder this user cannot enter is named as unreachable" \
        '{ [ $rc -ne 0 ] && grep -q "base_model: .$T/private/model. cannot be reached by this user" "$T/err" && ! grep -q "does not exist" "$T/err"; } || ro_said'
    # Reading needs no write access: runs, show, export and compare work (read-only open).
    as_nobody "$T/lorabench-ro" runs --workspace "$W" > "$T/ro-runs" 2> "$T/err"; rc=$?
    check "read-only: runs lists the runs" '{ [ $rc -eq 0 ] && [ ! -s "$T/err" ] && grep -Eq "^ +\*?1 +kill +done" "$T/ro-runs"; } || ro_said'
    as_nobody "$T/lorabench-ro" show 1 --workspace "$W" > "$T/ro-show" 2> "$T/err"; rc=$?
    check "read-only: show works" '{ [ $rc -eq 0 ] && grep -q "artifact adapter" "$T/ro-show"; } || ro_said'
    as_nobody "$T/lorabench-ro" export --what runs --format csv --workspace "$W" > "$T/ro-csv" 2> "$T/err"; rc=$?
    check "read-only: export works" '{ [ $rc -eq 0 ] && [ "$(grep -c "^[0-9]" "$T/ro-csv")" = "$n0" ]; } || ro_said'
    as_nobody "$T/lorabench-ro" compare 1 2 --workspace "$W" > /dev/null 2> "$T/err"; rc=$?
    check "read-only: compare works" '[ $rc -eq 0 ] || ro_said'
    check "read-only: nothing written" '[ "$(q "SELECT COUNT(*) FROM runs")" = "$n0" ] && intact "$W"'
    chmod 700 "$T"
else
    echo "skipping the read-only workspace checks (needs root and setpriv)"
fi

# Locked: an sqlite3 shell holds the write lock (BEGIN EXCLUSIVE) for 3 s.
lock_db() {  # seconds
    (echo "BEGIN EXCLUSIVE;"; sleep "$1"; echo "COMMIT;") | sqlite3 "$W/lorabench.db" &
    LOCKER=$!
    for _ in $(seq 1 50); do  # until the lock is really held
        sqlite3 "$W/lorabench.db" "BEGIN IMMEDIATE; ROLLBACK;" > /dev/null 2>&1 || return 0
        sleep 0.05
    done
}
n0=$(q "SELECT COUNT(*) FROM runs")
lock_db 3
s0=$(date +%s%N)
LORABENCH_BUSY_TIMEOUT_MS=500 "$B" train "$T/small.json" --workspace "$W" > /dev/null 2> "$T/err"; rc=$?
ms=$(( ($(date +%s%N) - s0) / 1000000 ))
check "locked: train exits non-zero" '[ $rc -ne 0 ]'
check "locked: gives up after the busy timeout (${ms} ms)" '[ $ms -ge 400 ] && [ $ms -lt 2500 ]'
check "locked: one sentence naming the database and the lock" \
    '[ $(wc -l < "$T/err") -eq 1 ] && grep -q "$W/lorabench.db.*locked.*another process" "$T/err"'
check "locked: runs still lists (readers are not blocked)" \
    '[ "$(LORABENCH_BUSY_TIMEOUT_MS=500 "$B" runs --json --workspace "$W" | grep -o "\"id\":" | wc -l)" = "$n0" ]'
wait "$LOCKER"
check "locked: nothing half-written" '[ "$(q "SELECT COUNT(*) FROM runs")" = "$n0" ] && intact "$W"'
# A lock shorter than the default busy timeout (10 s) is waited out.
lock_db 1
"$B" train "$T/small.json" --workspace "$W" --json > "$T/out" 2> "$T/err"; rc=$?
wait "$LOCKER"
check "locked briefly: train waits and finishes" '[ $rc -eq 0 ] && grep -q "\"status\":\"done\"" "$T/out"'
# A worker locked out of the database mid-run (longer than its busy timeout): it stops with
# the message in worker.log, nothing committed is lost, and resume finishes the run.
lw=$(LORABENCH_BUSY_TIMEOUT_MS=300 LORABENCH_TEST_STEP_DELAY_MS=20 "$B" train "$T/kill.json" --detach --workspace "$W")
for _ in $(seq 1 200); do [ "$(q "SELECT step FROM runs WHERE id = $lw")" -ge 8 ] && break; sleep 0.02; done
lwpid=$(q "SELECT pid FROM runs WHERE id = $lw")
q "SELECT step, loss FROM metrics WHERE run_id = $lw ORDER BY step" > "$T/before.lw"
lock_db 2
for _ in $(seq 1 100); do kill -0 "$lwpid" 2> /dev/null || break; sleep 0.05; done
wait "$LOCKER"
check "locked worker: exits, worker.log names the database and the lock" \
    '! kill -0 "$lwpid" 2> /dev/null && grep -q "$W/lorabench.db.*locked" "$W/runs/$lw/worker.log"'
for _ in $(seq 1 30); do
    "$B" runs --workspace "$W" > /dev/null 2>&1
    case "$(status_of "$lw")" in running) sleep 0.2 ;; *) break ;; esac
done
q "SELECT step, loss FROM metrics WHERE run_id = $lw ORDER BY step" > "$T/after.lw"
check "locked worker: run interrupted or failed, committed rows kept" \
    'case "$(status_of "$lw")" in interrupted|failed) true ;; *) false ;; esac && [ -z "$(comm -23 "$T/before.lw" "$T/after.lw")" ]'
"$B" resume "$lw" --workspace "$W" --json > /dev/null 2>&1
check "locked worker: resume finishes it with the reference loss" \
    '[ "$(status_of "$lw")" = done ] && same_loss "$(q "SELECT final_loss FROM runs WHERE id = $lw")" "$ref"'

# Missing base model: at eval/merge, and for a stored run whose model folder went away.
"$B" eval --model "$T/nope" --dataset "$T/data" --limit 2 > /dev/null 2> "$T/err"; rc=$?
check "missing model: eval names it" '[ $rc -ne 0 ] && [ $(wc -l < "$T/err") -eq 1 ] && grep -q "$T/nope" "$T/err"'
"$B" merge --model "$T/nope" --out "$T/m-nope" > /dev/null 2> "$T/err"; rc=$?
check "missing model: merge names it" '[ $rc -ne 0 ] && grep -q "$T/nope" "$T/err" && [ ! -e "$T/m-nope/model.safetensors" ]'
rm "$T/model/model.safetensors"
"$B" resume "$gone" --workspace "$W" > /dev/null 2> "$T/err"; rc=$?
check "missing model: resume exits non-zero naming model.safetensors" \
    '[ $rc -ne 0 ] && grep -q "$T/model/model.safetensors" "$T/err"'
check "missing model: run failed with the message" \
    '[ "$(status_of "$gone")" = failed ] && error_of "$gone" | grep -q "$T/model/model.safetensors"'

# Deleted adapter file: eval and merge name it; the run's record stays as it was.
snap1=$(snapshot)
rm "$ADAPTER1/adapter_model.safetensors"
"$B" eval --model "$M" --adapter "$ADAPTER1" --dataset "$T/data" --limit 2 > /dev/null 2> "$T/err"; rc=$?
check "deleted adapter: eval exits non-zero naming the file" \
    '[ $rc -ne 0 ] && [ $(wc -l < "$T/err") -eq 1 ] && grep -q "$ADAPTER1/adapter_model.safetensors" "$T/err"'
"$B" merge --model "$M" --adapter "$ADAPTER1" --out "$T/m-del" > /dev/null 2> "$T/err"; rc=$?
check "deleted adapter: merge exits non-zero naming the file, writes nothing" \
    '[ $rc -ne 0 ] && grep -q "$ADAPTER1/adapter_model.safetensors" "$T/err" && [ ! -e "$T/m-del/model.safetensors" ]'
"$B" show 1 --workspace "$W" > "$T/show" 2>&1; rc=$?
check "deleted adapter: show still works" '[ $rc -eq 0 ] && grep -q "artifact adapter" "$T/show"'

# Out of memory: a run whose activation arena alone is about 1.5 TB (batch 65536 at up to
# 512 source tokens) is refused before training with the numbers and a batch size that fits,
# instead of being killed by the kernel part way through.
sed 's/"batch_size": 4/"batch_size": 65536/; s/"max_source_tokens": 40/"max_source_tokens": 512/' "$T/small.json" > "$T/oom.json"
"$B" train "$T/oom.json" --workspace "$W" --json > /dev/null 2> "$T/err"; rc=$?
oom=$(q "SELECT MAX(id) FROM runs")
check "out of memory: refused before training, with the numbers and a batch size that fits" \
    '[ $rc -eq 1 ] && [ "$(status_of "$oom")" = failed ] && error_of "$oom" | grep -Eq "needs about [0-9]+ MiB .* but [0-9]+ MiB is available .*lower train.batch_size to [0-9]+" && [ "$(q "SELECT COUNT(*) FROM metrics WHERE run_id = $oom")" = 0 ]'

# ---- Nothing stored was damaged ----------------------------------------------------------
check "final integrity_check ok" 'intact "$W"'
check "completed runs unchanged at the end" '[ "$(snapshot)" = "$snap0" ] && [ "$snap1" = "$snap0" ]'
check "under 90 s ($(( $(date +%s) - t_start )) s)" '[ $(( $(date +%s) - t_start )) -lt 90 ]'
echo "$pass passed, $fail failed"
