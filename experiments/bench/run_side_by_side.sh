#!/usr/bin/env bash
# Side by side on one machine: lorabench's engine against Hugging Face transformers + PEFT,
# the four standard configurations (forward, LoRA r=8 q,v, LoRA r=8 all linear, full
# fine-tune with AdamW) on the FLAN-T5-small shape, batch 8, source 256, target 64, fp32,
# interleaved (ours, theirs, ours, theirs, ...) so that both see the same machine state,
# ROUNDS times; prints every JSON line to results.jsonl and a table of medians.
#
#   experiments/bench/run_side_by_side.sh [--threads 2] [--steps 3] [--rounds 3] [--bin build/lorabench]
#
# Needs: python3 with torch, transformers and peft; our binary (built here, or carried
# with its shared libraries: set LD_LIBRARY_PATH to where they are).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
THREADS=2 STEPS=3 ROUNDS=3 BIN=build/lorabench OUT=results.jsonl
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run_side_by_side: unknown option $1; see --help" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "run_side_by_side: $BIN is not an executable; build it with make or pass --bin" >&2; exit 1; }
python3 -c 'import torch, transformers, peft' 2>/dev/null || {
  echo "run_side_by_side: python3 cannot import torch, transformers and peft; install them (pip install torch transformers peft)" >&2; exit 1; }
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
: > "$OUT"
common=(--shape flan-t5-small --batch 8 --src 256 --tgt 64 --steps "$STEPS" --threads "$THREADS" --json)
ours() {  # config name, then bench arguments
  local name=$1; shift
  "$BIN" bench "${common[@]}" "$@" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["config"]=sys.argv[1]; print(json.dumps(d))' "$name" >> "$OUT"
}
theirs() {
  python3 "$here/hf_bench.py" --config "$1" --threads "$THREADS" --steps "$STEPS" >> "$OUT"
}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs; threads $THREADS; $(date -u +%FT%TZ)"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  ours forward --method none;              theirs forward
  ours lora-qv --method lora --rank 8 --targets q,v; theirs lora-qv
  ours lora-all --method lora --rank 8 --targets all; theirs lora-all
  ours full --method full;                 theirs full
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(impl, cfg, key):
    v = [r[key] for r in rows if r["impl"] == impl and r["config"] == cfg and r.get(key) is not None]
    return statistics.median(v) if v else float("nan")
names = {"forward": "forward", "lora-qv": "LoRA r=8 q,v", "lora-all": "LoRA r=8 all linear", "full": "full fine-tune"}
print(f"{'configuration':22} {'ours s/step':>11} {'HF s/step':>10} {'speed-up':>8} {'ours RSS MB':>11} {'HF RSS MB':>10} {'ours ratio':>10}")
for c, n in names.items():
    o, h = med("lorabench", c, "s_per_step"), med("hf", c, "s_per_step")
    print(f"{n:22} {o:11.3f} {h:10.3f} {h / o:7.2f}x {med('lorabench', c, 'peak_rss_mb'):11.0f} "
          f"{med('hf', c, 'peak_rss_mb'):10.0f} {med('lorabench', c, 'ratio'):10.2f}")
v = [r for r in rows if r["impl"] == "hf"][:1]
if v:
    print(f"torch {v[0]['torch']}, transformers {v[0]['transformers']}; medians of {len(rows) // 8} rounds; all lines in {sys.argv[1]}")
PY
