#!/usr/bin/env bash
# Precision bf16 against fp32 (train.precision, bench --precision): the same weights and
# batch give a bench loss within 1%; a 300-step LoRA r=8 run and a full fine-tune of the
# bundled t5-tiny in bf16 end with a final loss (the mean of the last 50 steps) within 2%
# of the fp32 run's and a ROUGE-1 inside the fp32 run's 95% interval; each run records the
# precision it used; a bf16 full fine-tune resumes from its checkpoint (AdamW's first
# moment in BF16) to the loss of an uninterrupted run. Skipped, with the reason, on a CPU without bf16 matrix products.
set -u
B="$1/lorabench"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
W="$T/ws"
M="$PWD/experiments/models/t5-tiny"
D="$PWD/experiments/data/debsum"

# the reason bf16 cannot run here, if it cannot
if ! "$B" bench --shape flan-t5-small --method none --batch 1 --src 8 --tgt 4 --steps 1 --warmup 0 \
        --precision bf16 --json > "$T/probe" 2> "$T/why"; then
    echo "skipped: precision bf16 is not available on this CPU: $(cat "$T/why")"
    echo "0 passed, 0 failed"
    exit 0
fi

json() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read())[sys.argv[2]])' "$1" "$2"; }

# 1. bench: the same random FLAN-T5-small weights and batch, forward and a LoRA step.
for m in none lora; do
    for p in fp32 bf16; do
        "$B" bench --shape flan-t5-small --method "$m" --batch 2 --src 64 --tgt 16 --steps 1 --warmup 0 \
            --precision "$p" --json > "$T/bench-$m-$p"
    done
    lf=$(json "$T/bench-$m-fp32" loss) lb=$(json "$T/bench-$m-bf16" loss)
    check "bench $m: bf16 loss $lb within 1% of fp32 $lf" \
        'awk -v a="$lb" -v b="$lf" "BEGIN{d=a-b; if(d<0)d=-d; exit !(d<=0.01*b)}"'
    check "bench $m: precision and kernel named" \
        '[ "$(json "$T/bench-$m-bf16" precision)" = bf16 ] && [ "$(json "$T/bench-$m-fp32" precision)" = fp32 ] && grep -q "bf16 (oneDNN" "$T/bench-$m-bf16"'
done
# each precision's ratio is against the peak of its own product path, measured in its process
check "bench: a peak per precision, ratio = GFLOP/s / peak" \
    'python3 - "$T/bench-lora-fp32" "$T/bench-lora-bf16" <<PY
import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f))
    assert d["peak_gflops"] > 0 and abs(d["ratio"] - d["gflops"] / d["peak_gflops"]) <= 0.002, d
PY'
# the AMX ceiling: measured in a bf16 run on AMX, null elsewhere and in fp32
check "bench: the AMX ceiling where bf16 runs on AMX, else null" \
    'python3 - "$T/bench-lora-fp32" "$T/bench-lora-bf16" <<PY
import json, sys
f, b = (json.load(open(a)) for a in sys.argv[1:])
assert f["amx_ceiling_gflops"] is None, f
amx = b["kernel"].startswith("amx-bf16")
assert (b["amx_ceiling_gflops"] > 0) if amx else (b["amx_ceiling_gflops"] is None), b
PY'

# 2. 300 steps of LoRA r=8 on q,v and of a full fine-tune, fp32 and bf16, same seed.
spec() {  # name method precision lr
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$M", "method": "$2",
  "dataset": { "path": "$D", "prefix": "summarize: ", "max_source_tokens": 32, "max_target_tokens": 16,
               "limit": 1200 },
  "lora": { "r": 8, "alpha": 16, "dropout": 0.0, "targets": ["q", "v"] },
  "train": { "max_steps": 300, "batch_size": 4, "lr": $4, "seed": 11, "checkpoint_every": 0,
             "precision": "$3" },
  "eval": { "limit": 96, "max_new_tokens": 16 },
  "threads": 2 }
JSON
}
for m in lora full; do
    lr=0.003; [ $m = full ] && lr=0.0005
    for p in fp32 bf16; do
        spec "$m-$p" "$m" "$p" "$lr"
        "$B" train "$T/$m-$p.json" --workspace "$W" --json > "$T/run-$m-$p" 2> "$T/err-$m-$p"
        check "$m $p: run done" 'grep -q "\"status\":\"done\"" "$T/run-$m-$p"'
    done
    row() { sqlite3 "$W/lorabench.db" "SELECT $2 FROM runs_view WHERE name = '$1'"; }
    # the final loss: the mean of the last 50 steps (one batch's loss is one sample of it)
    last() { sqlite3 "$W/lorabench.db" "SELECT avg(loss) FROM metrics WHERE step > 250 AND run_id = (SELECT id FROM runs WHERE name = '$1')"; }
    lf=$(last "$m-fp32") lb=$(last "$m-bf16")
    check "$m: bf16 final loss $lb within 2% of fp32 $lf" \
        'awk -v a="$lb" -v b="$lf" "BEGIN{d=a-b; if(d<0)d=-d; exit !(d<=0.02*b)}"'
    lo=$(sqlite3 "$W/lorabench.db" "SELECT e.rouge1_low FROM evals e JOIN runs r ON r.id = e.run_id WHERE r.name = '$m-fp32'")
    hi=$(sqlite3 "$W/lorabench.db" "SELECT e.rouge1_high FROM evals e JOIN runs r ON r.id = e.run_id WHERE r.name = '$m-fp32'")
    r1=$(row "$m-bf16" rouge1)
    check "$m: bf16 ROUGE-1 $r1 inside fp32's interval [$lo, $hi]" \
        'awk -v r="$r1" -v lo="$lo" -v hi="$hi" "BEGIN{exit !(r>=lo && r<=hi)}"'
    check "$m: each run records its precision" \
        '[ "$(row "$m-bf16" precision)" = bf16 ] && [ "$(row "$m-fp32" precision)" = fp32 ]'
    echo "    $m: final loss fp32 $lf, bf16 $lb; ROUGE-1 fp32 $(row "$m-fp32" rouge1) [$lo, $hi], bf16 $r1"
done
"$B" show 2 --workspace "$W" > "$T/show" 2>&1
check "show names the precision" 'grep -q "products in bf16" "$T/show"'

# 3. eval and generate take --precision too: the same adapter evaluated both ways.
A="$W/runs/2/adapter"
for p in fp32 bf16; do
    "$B" eval --model "$M" --adapter "$A" --dataset "$D" --prefix "summarize: " --limit 32 --max-source 32 \
        --max-new-tokens 16 --precision $p --json > "$T/eval-$p" 2> "$T/eval-err-$p"
done
check "eval --precision bf16 says so" 'grep -q "\"precision\":\"bf16\"" "$T/eval-bf16" && grep -q "\"precision\":\"fp32\"" "$T/eval-fp32"'
r_f=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rouge1"]["f"])' "$T/eval-fp32")
r_b=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rouge1"]["f"])' "$T/eval-bf16")
check "eval: bf16 ROUGE-1 $r_b within 0.05 of fp32 $r_f" 'awk -v a="$r_b" -v b="$r_f" "BEGIN{d=a-b; if(d<0)d=-d; exit !(d<=0.05)}"'
"$B" generate --model "$M" --adapter "$A" --input "summarize: a tool to compare files" --precision bf16 --stats \
    > "$T/gen" 2> "$T/gen-err"
check "generate --precision bf16 generates and says so" '[ -s "$T/gen" ] && grep -q "precision bf16" "$T/gen-err"'
"$B" generate --model "$M" --input x --precision half > /dev/null 2> "$T/gen-bad"; rc=$?
check "a wrong --precision is refused naming the values" '[ $rc -ne 0 ] && grep -q "fp32, bf16 or auto" "$T/gen-bad"'
# 4. A bf16 full fine-tune keeps AdamW's first moment in bf16, its checkpoint too: a run
# whose worker vanishes after 5 steps and is resumed ends with the loss of one that ran
# through (the checkpoint restores every value exactly).
ck() {  # name
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$M", "method": "full",
  "dataset": { "path": "$D", "prefix": "summarize: ", "max_source_tokens": 32, "max_target_tokens": 16,
               "limit": 200 },
  "train": { "max_steps": 10, "batch_size": 4, "lr": 0.0005, "seed": 5, "checkpoint_every": 2,
             "precision": "bf16" },
  "eval": { "limit": 8, "max_new_tokens": 4 },
  "threads": 2 }
JSON
}
ck ck-through; ck ck-resumed
"$B" train "$T/ck-through.json" --workspace "$W" > /dev/null 2>&1
LORABENCH_TEST_DIE_AFTER=5 "$B" train "$T/ck-resumed.json" --workspace "$W" > /dev/null 2>&1
cid=$(sqlite3 "$W/lorabench.db" "SELECT id FROM runs WHERE name = 'ck-resumed'")
m_dtype=$(python3 -c '
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
print(h["adam_m"]["dtype"], h["adam_v"]["dtype"], h["params"]["dtype"])' "$W/runs/$cid/checkpoint.safetensors" 2>&1)
check "bf16 full fine-tune: the checkpoint holds adam_m in BF16 ($m_dtype)" '[ "$m_dtype" = "BF16 F32 F32" ]'
"$B" resume "$cid" --workspace "$W" > /dev/null 2> "$T/ck-err"
l1=$(sqlite3 "$W/lorabench.db" "SELECT final_loss FROM runs_view WHERE name = 'ck-through'")
l2=$(sqlite3 "$W/lorabench.db" "SELECT final_loss FROM runs_view WHERE name = 'ck-resumed'")
check "bf16 full fine-tune resumed from its checkpoint: final loss $l2 = $l1" \
    '[ -n "$l1" ] && awk -v a="$l2" -v b="$l1" "BEGIN{d=a-b; if(d<0)d=-d; exit !(d<=1e-6*(b<0?-b:b)+1e-9)}"'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
