#!/usr/bin/env bash
# Side by side on one machine: lorabench's engine against Hugging Face transformers + PEFT,
# the four standard configurations (forward, LoRA r=8 q,v, LoRA r=8 all linear, full
# fine-tune with AdamW) on the FLAN-T5-small shape, batch 8, source 256, target 64,
# interleaved (ours fp32, ours bf16, HF fp32, HF bf16 autocast, ...) so that all see the same
# machine state, ROUNDS times; prints every JSON line to results.jsonl and a table of medians.
#
#   experiments/bench/run_side_by_side.sh [--threads 2] [--steps 3] [--rounds 3]
#       [--bin build/lorabench] [--cpus LIST] [--no-bf16]
#
# --cpus pins every process to those CPUs with taskset (e.g. two distinct physical cores:
# see /sys/devices/system/cpu/cpu*/topology/core_id). --no-bf16 leaves out our
# --precision bf16 and HF's torch.autocast("cpu", dtype=torch.bfloat16) columns.
#
# Needs: python3 with torch, transformers and peft; our binary (built here, or carried
# with its shared libraries: set LD_LIBRARY_PATH to where they are).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
THREADS=2 STEPS=3 ROUNDS=3 BIN=build/lorabench OUT=results.jsonl CPUS="" BF16=1
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --cpus) CPUS=$2; shift 2 ;;
    --no-bf16) BF16=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run_side_by_side: unknown option $1; see --help" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "run_side_by_side: $BIN is not an executable; build it with make or pass --bin" >&2; exit 1; }
python3 -c 'import torch, transformers, peft' 2>/dev/null || {
  echo "run_side_by_side: python3 cannot import torch, transformers and peft; install them (pip install torch transformers peft)" >&2; exit 1; }
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
: > "$OUT"
pin=()
[ -n "$CPUS" ] && pin=(taskset -c "$CPUS")
common=(--shape flan-t5-small --batch 8 --src 256 --tgt 64 --steps "$STEPS" --threads "$THREADS" --json)
ours() {  # precision, config name, then bench arguments
  local prec=$1 name=$2; shift 2
  "${pin[@]}" "$BIN" bench "${common[@]}" --precision "$prec" "$@" |
    python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["config"]=sys.argv[1]; d["impl"]="lorabench-"+d.get("precision","fp32"); print(json.dumps(d))' "$name" >> "$OUT"
}
theirs() {  # autocast (none|bf16), config name
  "${pin[@]}" python3 "$here/hf_bench.py" --config "$2" --autocast "$1" --threads "$THREADS" --steps "$STEPS" >> "$OUT"
}
both() {  # config name, then bench arguments
  local name=$1; shift
  ours fp32 "$name" "$@"
  [ "$BF16" = 1 ] && ours bf16 "$name" "$@"
  theirs none "$name"
  [ "$BF16" = 1 ] && theirs bf16 "$name"
  return 0
}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs; threads $THREADS; cpus ${CPUS:-any}; $(date -u +%FT%TZ)"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  both forward --method none
  both lora-qv --method lora --rank 8 --targets q,v
  both lora-all --method lora --rank 8 --targets all
  both full --method full
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(impl, cfg, key):
    v = [r[key] for r in rows if r["impl"] == impl and r["config"] == cfg and r.get(key) is not None]
    return statistics.median(v) if v else float("nan")
names = {"forward": "forward", "lora-qv": "LoRA r=8 q,v", "lora-all": "LoRA r=8 all linear", "full": "full fine-tune"}
impls = [("lorabench-fp32", "ours fp32"), ("lorabench-bf16", "ours bf16"), ("hf", "HF fp32"), ("hf-bf16", "HF bf16")]
impls = [(k, n) for k, n in impls if any(r["impl"] == k for r in rows)]
print("seconds per step (peak RSS MB), medians; speed-up = HF / ours at the same precision")
print(f"{'configuration':22}" + "".join(f" {n:>17}" for _, n in impls) + "  speed-up fp32  speed-up bf16")
for c, n in names.items():
    line = f"{n:22}"
    for k, _ in impls:
        line += f" {med(k, c, 's_per_step'):8.3f} ({med(k, c, 'peak_rss_mb'):5.0f})"
    line += f"  {med('hf', c, 's_per_step') / med('lorabench-fp32', c, 's_per_step'):12.2f}x"
    line += f"  {med('hf-bf16', c, 's_per_step') / med('lorabench-bf16', c, 's_per_step'):12.2f}x"
    print(line)
v = [r for r in rows if r["impl"].startswith("hf")][:1]
if v:
    print(f"torch {v[0]['torch']}, transformers {v[0]['transformers']}; all lines in {sys.argv[1]}")
PY
