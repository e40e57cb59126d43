#!/usr/bin/env bash
# Data-parallel scaling of `lorabench train` (issue 23): the step time of the same run as
# RANKS processes (mpirun) × THREADS threads each, for every configuration and method,
# interleaved (config after config within a round, ROUNDS rounds) so that all see the same
# machine state. Each measurement is a fresh run on random weights of the FLAN-T5-small
# shape (`lorabench bench --shape flan-t5-small --save`; the bundled t5-tiny tokenizer,
# whose 8192 ids all fit FLAN-T5's vocabulary) and examples made of 8 debsum descriptions
# each, cut to SRC source and TGT target tokens (so every batch is BATCH × SRC and BATCH ×
# TGT, the shape `lorabench bench` times), STEPS steps; the step time is the
# median of steps 2..STEPS (the runner's step_ms of rank 0, the gradient sums included);
# sum_pct is the share of rank 0's step time spent in the sums over the whole run (waiting
# for the slowest rank included: what overlapping the sums with the backward could save).
# Prints one JSON line per measurement (also appended to OUT) and a table of medians.
#
#   experiments/bench/mpi_scaling.sh [--bin build/lorabench] [--configs "1x2 2x1"]
#       [--methods "lora full"] [--steps 6] [--rounds 2] [--batch 8] [--src 256] [--tgt 64]
#       [--model DIR] [--precision fp32] [--mpirun-args "--bind-to none"] [--out mpi_scaling.jsonl]
#
# A configuration RxT runs `mpirun -n R` (R > 1) or one plain process (R = 1), with the
# spec's "threads": T (threads are per rank). --model: a T5 folder with config.json,
# model.safetensors and tokenizer.json (default: a random FLAN-T5-small written once to
# $TMPDIR/lorabench-ft5s). On a 16-core machine, e.g.:
#   experiments/bench/mpi_scaling.sh --configs "1x16 2x8 4x4 8x2 16x1"
# and to pin each rank to its own cores: --mpirun-args "--map-by slot:PE=T --bind-to core"
# (one T for all configurations, so run the script once per T).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=build/lorabench CONFIGS="1x2 2x1" METHODS="lora full" STEPS=6 ROUNDS=2 BATCH=8 SRC=256 TGT=64
MODEL="" PRECISION=fp32 MPIARGS="--bind-to none" OUT=mpi_scaling.jsonl
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --methods) METHODS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --src) SRC=$2; shift 2 ;;
    --tgt) TGT=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --precision) PRECISION=$2; shift 2 ;;
    --mpirun-args) MPIARGS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "mpi_scaling: unknown option $1; see --help" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "mpi_scaling: $BIN is not built; run make first or give --bin" >&2; exit 2; }
command -v mpirun > /dev/null || { echo "mpi_scaling: mpirun is missing; apt-get install openmpi-bin" >&2; exit 2; }
root=""; [ "$(id -u)" -eq 0 ] && root="--allow-run-as-root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$MODEL" ]; then
    MODEL="${TMPDIR:-/tmp}/lorabench-ft5s"
    if [ ! -f "$MODEL/model.safetensors" ]; then
        "$BIN" bench --shape flan-t5-small --save "$MODEL" > /dev/null
    fi
    cp experiments/models/t5-tiny/tokenizer.json "$MODEL/"
fi
for f in config.json model.safetensors tokenizer.json; do
    [ -f "$MODEL/$f" ] || { echo "mpi_scaling: $MODEL/$f is missing; give --model a T5 folder" >&2; exit 2; }
done
# Examples as long as the shape: 8 descriptions (JSON-escaped as they are) per example.
mkdir -p "$tmp/data"
sed -n "1,$((8 * BATCH * (STEPS + 1)))"'s/^{"description":"\(.*\)","synopsis":".*$/\1/p' experiments/data/debsum/train.jsonl |
    awk '{b = b (b == "" ? "" : " ") $0} NR % 8 == 0 {printf "{\"source\":\"%s\",\"target\":\"%s\"}\n", b, b; b = ""}' \
    > "$tmp/data/train.jsonl"
head -n 2 "$tmp/data/train.jsonl" > "$tmp/data/validation.jsonl"
measure() {  # method ranks threads round
    local method=$1 R=$2 Th=$3 round=$4 ws="$tmp/ws-$1-$2x$3-$4"
    cat > "$tmp/spec.json" <<JSON
{ "name": "$method-${R}x$Th", "base_model": "$MODEL", "method": "$method",
  "dataset": { "path": "$tmp/data", "source": "source", "target": "target", "max_source_tokens": $SRC,
               "max_target_tokens": $TGT },
  "lora": { "r": 8, "alpha": 16, "dropout": 0.0, "targets": ["q", "v"] },
  "train": { "max_steps": $STEPS, "batch_size": $BATCH, "lr": 0.0003, "seed": 1, "checkpoint_every": 0,
             "precision": "$PRECISION" },
  "eval": { "limit": 1, "max_new_tokens": 1 },
  "threads": $Th }
JSON
    if [ "$R" -eq 1 ]; then
        "$BIN" train "$tmp/spec.json" --workspace "$ws" --json > "$tmp/out" 2> "$tmp/err"
    else
        # shellcheck disable=SC2086
        mpirun -n "$R" --oversubscribe $root $MPIARGS "$BIN" train "$tmp/spec.json" --workspace "$ws" --json \
            > "$tmp/out" 2> "$tmp/err"
    fi || { echo "mpi_scaling: $method ${R}x$Th failed:" >&2; tail -n 5 "$tmp/err" >&2; exit 1; }
    # the median step (the lower middle one of an even count) with its tokens/s
    "$BIN" export --what metrics --format csv --workspace "$ws" | awk -F, 'NR > 1 && $2 > 1 {print $8, $7}' |
        sort -n > "$tmp/steps"
    local k ms tps pct
    k=$(wc -l < "$tmp/steps")
    # rank 0's note: the share of the step time in the sums (MPI_Allreduce)
    pct=$(cat "$tmp/out" "$tmp/err" | sed -n 's/.*: \([0-9.]*\)% of the step time in the sums.*/\1/p' | head -n 1)
    [ -n "$pct" ] || pct=null
    [ "$k" -gt 0 ] || { echo "mpi_scaling: $method ${R}x$Th stored no step after the first" >&2; exit 1; }
    read -r ms tps < <(sed -n "$(( (k + 1) / 2 ))p" "$tmp/steps")
    printf '{"method":"%s","ranks":%d,"threads":%d,"cores":%d,"batch":%d,"src":%d,"tgt":%d,"steps":%d,"round":%d,"step_ms":%.1f,"tokens_per_s":%.1f,"sum_pct":%s}\n' \
        "$method" "$R" "$Th" $((R * Th)) "$BATCH" "$SRC" "$TGT" "$STEPS" "$round" "$ms" "$tps" "$pct" | tee -a "$OUT" >> "$tmp/all.jsonl"
    rm -rf "$ws"
}
for round in $(seq 1 "$ROUNDS"); do
    for method in $METHODS; do
        for c in $CONFIGS; do
            measure "$method" "${c%x*}" "${c#*x}" "$round"
            tail -n 1 "$tmp/all.jsonl"
        done
    done
done
echo
echo "median step time over $ROUNDS rounds (FLAN-T5-small shape, batch $BATCH, src $SRC, tgt $TGT; speed-up against the first configuration)"
printf '%-6s %-10s %10s %12s %9s %7s\n' method ranks×thr "ms/step" "tokens/s" speed-up "sums %"
for method in $METHODS; do
    base=""
    for c in $CONFIGS; do
        R=${c%x*} Th=${c#*x}
        read -r ms tps pct < <(grep "\"method\":\"$method\",\"ranks\":$R,\"threads\":$Th," "$tmp/all.jsonl" |
            sed 's/.*"step_ms":\([0-9.]*\),"tokens_per_s":\([0-9.]*\),"sum_pct":\([0-9.a-z]*\).*/\1 \2 \3/' | sort -n |
            awk '{a[NR] = $1; b[NR] = $2; c[NR] = $3} END {i = int((NR + 1) / 2); print a[i], b[i], c[i]}')
        [ -z "$base" ] && base=$ms
        printf '%-6s %-10s %10.1f %12.1f %8.2fx %7s\n' "$method" "${R}×$Th" "$ms" "$tps" \
            "$(awk -v a="$base" -v b="$ms" 'BEGIN{print a/b}')" "$pct"
    done
done
