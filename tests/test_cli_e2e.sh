#!/usr/bin/env bash
# End to end through the command line: a short LoRA run on the fixture model trains, is
# evaluated and stored (metrics, an eval with ROUGE, samples, an adapter whose sha256 is
# in artifacts); bad specs give field-named messages; a worker killed with SIGKILL leaves
# the database intact and the run interrupted, and resume finishes it with the same final
# loss as an uninterrupted run.
set -u
B="$1/lorabench"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. tests/e2e_common.sh
spec() {  # name method steps extra-json
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$M", "method": "$2",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": { "r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"] },
  "train": { "max_steps": $3, "batch_size": 4, "lr": 0.003, "seed": 7, "checkpoint_every": 2 $4 },
  "eval": { "limit": 6, "max_new_tokens": 8 },
  "threads": 1 }
JSON
}

# 1. A LoRA run, foreground.
spec lora lora 6 ""
"$B" train "$T/lora.json" --workspace "$W" > "$T/out" 2> "$T/err"; rc=$?
check "train exits 0" '[ $rc -eq 0 ]'
check "run done" 'grep -q "run 1 lora: done" "$T/out"'
"$B" runs --json --workspace "$W" > "$T/runs.json"
check "runs --json has the run" 'grep -q "\"status\":\"done\"" "$T/runs.json" && grep -q "\"steps\":6" "$T/runs.json"'
check "ROUGE stored" 'grep -q "\"rouge1\":0\.[0-9]" "$T/runs.json" || grep -q "\"rouge1\":0," "$T/runs.json"'
check "trainable = PEFT count" 'grep -q "\"trainable\":6144" "$T/runs.json"'
"$B" export --what metrics --format csv --workspace "$W" > "$T/metrics.csv"
check "6 metric rows" '[ $(grep -c "^1," "$T/metrics.csv") -eq 6 ]'
"$B" export --what samples --format json --workspace "$W" > "$T/samples.json"
check "6 samples" '[ $(grep -o "\"idx\"" "$T/samples.json" | wc -l) -eq 6 ]'
"$B" show 1 --workspace "$W" > "$T/show"
adapter=$(grep "artifact adapter " "$T/show" | awk '{print $3}')
stored=$(grep "artifact adapter " "$T/show" | sed 's/.*sha256 \([0-9a-f]*\)).*/\1/')
check "adapter file exists" '[ -f "$adapter" ]'
check "adapter sha256 matches artifacts" '[ "$(sha256sum "$adapter" | cut -d" " -f1)" = "$stored" ]'
check "adapter_config is PEFT's" 'grep -q "\"peft_type\": \"LORA\"" "$(dirname "$adapter")/adapter_config.json"'

# 2. The stored adapter evaluates through eval and merges.
"$B" eval --model "$M" --adapter "$(dirname "$adapter")" --dataset "$T/data" --prefix "summarize: " --limit 6 \
    --max-new-tokens 8 --json > "$T/eval.json" 2>/dev/null
check "eval --adapter prints ROUGE" 'grep -q "\"rouge1\":{\"f\":" "$T/eval.json"'
"$B" merge --model "$M" --adapter "$(dirname "$adapter")" --out "$T/merged" > /dev/null
check "merge writes a checkpoint" '[ -f "$T/merged/model.safetensors" ] && [ -f "$T/merged/config.json" ] && [ -f "$T/merged/tokenizer.json" ]'
# merge never writes into the folders it reads, nor over a model without --force
sum_m=$(sha256sum "$M/model.safetensors")
"$B" merge --model "$M" --adapter "$(dirname "$adapter")" --out "$M" > /dev/null 2> "$T/err2"; rc=$?
check "merge --out equal to --model is refused, the base untouched" \
    '[ $rc -ne 0 ] && grep -q "is the folder of --model" "$T/err2" && [ "$(sha256sum "$M/model.safetensors")" = "$sum_m" ]'
"$B" merge --model "$M" --adapter "$(dirname "$adapter")" --out "$(dirname "$adapter")" > /dev/null 2> "$T/err2"; rc=$?
check "merge --out equal to --adapter is refused" '[ $rc -ne 0 ] && grep -q "is the folder of --adapter" "$T/err2"'
sum_o=$(sha256sum "$T/merged/model.safetensors")
"$B" merge --model "$M" --out "$T/merged" --dtype bf16 > /dev/null 2> "$T/err2"; rc=$?
check "merge over an existing model needs --force" \
    '[ $rc -ne 0 ] && grep -q "already holds a model" "$T/err2" && [ "$(sha256sum "$T/merged/model.safetensors")" = "$sum_o" ]'
"$B" merge --model "$M" --adapter "$(dirname "$adapter")" --out "$T/merged" --force > /dev/null 2> "$T/err2"; rc=$?
check "merge --force replaces it" '[ $rc -eq 0 ] && [ -f "$T/merged/model.safetensors" ]'

# 3. Bad specs: one message naming the field.
bad() {  # name json needle
    printf '%s' "$2" > "$T/bad.json"
    "$B" train "$T/bad.json" --workspace "$W" > /dev/null 2> "$T/err"; rc=$?
    needle=$3
    check "bad spec: $1" '[ $rc -ne 0 ] && grep -q -- "$needle" "$T/err"'
}
bad "unknown method" "{\"base_model\":\"$M\",\"dataset\":{\"path\":\"$T/data\"},\"method\":\"qlora\"}" "method"
bad "rank 0" "{\"base_model\":\"$M\",\"dataset\":{\"path\":\"$T/data\"},\"lora\":{\"r\":0}}" "lora.r"
bad "negative lr" "{\"base_model\":\"$M\",\"dataset\":{\"path\":\"$T/data\"},\"train\":{\"lr\":-1}}" "train.lr"
bad "unknown key" "{\"base_model\":\"$M\",\"dataset\":{\"path\":\"$T/data\"},\"lora\":{\"rank\":8}}" "lora.rank"
bad "missing model" "{\"base_model\":\"$T/nope\",\"dataset\":{\"path\":\"$T/data\"}}" "base_model"
bad "target not in model" "{\"base_model\":\"$M\",\"dataset\":{\"path\":\"$T/data\"},\"lora\":{\"targets\":[\"wi\"]}}" "wi"

# 4. Crash and resume: the reference, then 5 runs killed at random steps and resumed.
spec full full 8 ""
"$B" train "$T/full.json" --workspace "$W" --json > "$T/ref.json" 2>/dev/null
ref=$("$B" runs --json --filter "name=full" --workspace "$W" | sed 's/.*"loss":\([^,]*\),.*/\1/')
check "reference run done" 'grep -q "\"status\":\"done\"" "$T/ref.json"'
killed=0
# The kill comes at a random step of the first 5 of 8, each slowed to 150 ms: at least 450 ms
# of steps are left when the poll sees the step, more than a poll takes even under ASan (with
# 60 ms steps and up to step 6, a slow poll had let a run finish before its kill).
for trial in 1 2 3 4 5; do
    id=$(LORABENCH_TEST_STEP_DELAY_MS=150 "$B" train "$T/full.json" --detach --workspace "$W")
    want=$(( (RANDOM % 5) + 1 ))
    for _ in $(seq 1 600); do  # until the worker reached the step (or finished)
        s=$("$B" runs --json --filter "id=$id" --workspace "$W")
        steps=$(printf '%s' "$s" | sed 's/.*"steps":\([0-9]*\).*/\1/')
        case "$steps" in ''|*[!0-9]*) steps=0 ;; esac
        [ "$steps" -ge "$want" ] && break
        printf '%s' "$s" | grep -q '"status":"done"' && break
        sleep 0.05
    done
    pid=$(printf '%s' "$s" | sed 's/.*"pid":\([0-9]*\).*/\1/')
    kill -9 "$pid" 2>/dev/null
    sleep 2.5
    st=$("$B" runs --json --filter "id=$id" --workspace "$W")
    if printf '%s' "$st" | grep -q '"status":"done"'; then
        check "trial $trial: finished before the kill" 'true'
    else
        killed=$((killed + 1))
        check "trial $trial: killed run interrupted" 'printf "%s" "$st" | grep -q "\"status\":\"interrupted\""'
        check "trial $trial: integrity_check ok" '[ "$(sqlite3 "$W/lorabench.db" "PRAGMA integrity_check")" = ok ]'
        "$B" resume "$id" --workspace "$W" > /dev/null 2>&1
    fi
    got=$("$B" runs --json --filter "id=$id" --workspace "$W" | sed 's/.*"loss":\([^,]*\),.*/\1/')
    check "trial $trial: resumed loss $got = $ref" 'awk -v a="$got" -v b="$ref" "BEGIN{d=a-b; if(d<0)d=-d; exit !(d<=1e-6*(b<0?-b:b)+1e-9)}"'
done
check "at least 4 of 5 workers were killed mid-run ($killed)" '[ $killed -ge 4 ]'
check "integrity_check ok" '[ "$(sqlite3 "$W/lorabench.db" "PRAGMA integrity_check")" = ok ]'
# 5. The encoder cache: LoRA only in the decoder, 3 epochs of 12 batches. The encoder runs
# for each example once and its output is reused; the losses equal those of a run without
# the cache (the fixture has dropout 0), and of one whose cache budget is 0.
W5="$T/ws5"
cache_spec() {  # name extra-train-json
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$M", "method": "lora",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": { "r": 4, "alpha": 8, "dropout": 0.1, "targets": ["q", "v"], "stacks": ["decoder"] },
  "train": { "epochs": 3, "batch_size": 4, "lr": 0.003, "seed": 7, "checkpoint_every": 0 $2 },
  "eval": { "limit": 2, "max_new_tokens": 4 },
  "threads": 1 }
JSON
}
cache_spec cached ""
cache_spec uncached ', "cache_encoder": false'
"$B" train "$T/cached.json" --workspace "$W5" > /dev/null 2> "$T/err5"
check "cache: each example encoded once, then reused (48 computed, 96 from the cache)" \
    'grep -q "the encoder is frozen: 48 example encodings computed, 96 taken from the cache" "$T/err5"'
"$B" train "$T/uncached.json" --workspace "$W5" > /dev/null 2> "$T/err5b"
check "no cache note with cache_encoder false" '! grep -q "encoder is frozen" "$T/err5b"'
LORABENCH_ENCODER_CACHE_MB=0 "$B" train "$T/cached.json" --workspace "$W5" > /dev/null 2> "$T/err5c"
check "cache budget 0: every encoding computed, and the note says why" \
    'grep -q "144 example encodings computed, 0 taken from the cache (0.0 MB, full" "$T/err5c"'
"$B" export --what metrics --format csv --workspace "$W5" > "$T/m5.csv"
losses() { awk -F, -v r="$1" '$1 == r { print $4 }' "$T/m5.csv"; }
check "36 steps each" '[ "$(losses 1 | wc -l)" -eq 36 ] && [ "$(losses 2 | wc -l)" -eq 36 ] && [ "$(losses 3 | wc -l)" -eq 36 ]'
same_losses() {
    paste -d' ' <(losses "$1") <(losses "$2") |
        awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * ($2 < 0 ? -$2 : $2) + 1e-7) bad++ } END { exit bad > 0 }'
}
check "cached losses equal uncached ones (every step, 1e-5)" 'same_losses 1 2'
check "budget-0 losses equal uncached ones" 'same_losses 3 2'
"$B" show 1 --workspace "$W5" > "$T/show5"
check "show has one line per epoch (steps 1–12, 13–24, 25–36)" \
    '[ "$(grep -Ec "^  epoch [123] +steps (1–12|13–24|25–36)  mean loss [0-9.]+  [0-9.]+ ms/step" "$T/show5")" -eq 3 ]'
ep2=$(losses 1 | sed -n 13,24p | awk '{ s += $1 } END { printf "%.4f", s / NR }')
# tokens are a running total: epoch 1's tokens/s times its steps' time is the total at step 12
tok12=$(awk -F, '$1 == 1 && $2 == 12 { print $10 }' "$T/m5.csv")
ms12=$(awk -F, '$1 == 1 && $2 <= 12 { s += $8 } END { print s }' "$T/m5.csv")
tps1=$(sed -n 's/^  epoch 1 .*  \([0-9]*\) tokens\/s$/\1/p' "$T/show5")
check "epoch 1's tokens/s ($tps1) covers its $tok12 tokens" \
    'awk -v t="$tok12" -v ms="$ms12" -v r="$tps1" "BEGIN { e = r * ms / 1000; exit !(t > 0 && e > 0.99 * t && e < 1.01 * t) }"'
shown2=$(sed -n 's/^  epoch 2 .* mean loss \([0-9.]*\) .*/\1/p' "$T/show5")
check "epoch 2's mean loss ($shown2) is the mean of its steps ($ep2)" \
    'awk -v a="$shown2" -v b="$ep2" "BEGIN { d = a - b; exit !(a != \"\" && d < 2e-4 && d > -2e-4) }"'
# a run of 25 one-step epochs is shown in 9 lines of 3 epochs (the last of 1)
cat > "$T/long.json" <<JSON
{ "name": "long", "base_model": "$M", "method": "lora",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 24, "max_target_tokens": 8 },
  "lora": { "r": 2, "alpha": 4, "targets": ["q"] },
  "train": { "epochs": 25, "batch_size": 48, "lr": 0.003, "seed": 7, "checkpoint_every": 0 },
  "eval": { "limit": 1, "max_new_tokens": 2 },
  "threads": 1 }
JSON
"$B" train "$T/long.json" --workspace "$T/ws5l" > /dev/null 2>&1
"$B" show 1 --workspace "$T/ws5l" > "$T/show5long"
check "show groups 25 epochs into 9 lines (1–3, ..., 22–24, 25)" \
    '[ "$(grep -Ec "^  epochs? [0-9]" "$T/show5long")" -eq 9 ] && grep -Eq "^  epochs 1–3  steps 1–3  mean loss" "$T/show5long" && grep -Eq "^  epochs 22–24  steps 22–24  mean loss" "$T/show5long" && grep -Eq "^  epoch 25 +steps 25–25  mean loss" "$T/show5long"'

# 6. Frozen weights in bf16: the run trains and is evaluated like the fp32 one; the fixture's
# fp32 weights are rounded, so its losses are close to those of run 2, not equal.
cache_spec bf16 ', "cache_encoder": false, "frozen_weights_bf16": true'
"$B" train "$T/bf16.json" --workspace "$W5" > "$T/out6" 2>&1
check "bf16 run done with ROUGE" 'grep -q "run 4 bf16: done .*ROUGE-1" "$T/out6"'
"$B" export --what metrics --format csv --workspace "$W5" > "$T/m5.csv"
check "bf16 losses within 1% of the fp32 run's, and not all equal" \
    'paste -d" " <(losses 4) <(losses 2) | awk "{ d = \$1 - \$2; if (d < 0) d = -d; if (d > 0.01 * \$2) bad++; if (d > 0) diff++ } END { exit !(NR == 36 && !bad && diff) }"'
# 7. Pretraining from T5's random initialisation (a folder with no weights): span corruption,
# then the same with every target the whole text (train.denoise_fraction 1), whose steps
# carry the full descriptions as targets; fraction 0 is plain span corruption, draw for draw.
W7="$T/ws7"
mkdir -p "$T/fresh" && cp "$M/config.json" "$M/tokenizer.json" "$T/fresh/"
pt_spec() {  # name extra-train-json
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$T/fresh", "method": "full",
  "dataset": { "path": "$T/data", "max_source_tokens": 40, "max_target_tokens": 14 },
  "train": { "max_steps": 3, "batch_size": 4, "lr": 0.003, "seed": 7, "checkpoint_every": 0,
             "objective": "span_corruption" $2 },
  "threads": 1 }
JSON
}
pt_spec span ""
pt_spec denoise ', "denoise_fraction": 1'
pt_spec zero ', "denoise_fraction": 0'
pt_spec fastbias ', "position_bias_lr_ratio": 100'
for n in span denoise zero fastbias; do "$B" pretrain "$T/$n.json" --workspace "$W7" > "$T/out7$n" 2>&1; done
check "pretraining from a random init is done" 'grep -q "run 1 span: done  loss" "$T/out7span" && [ -f "$W7/runs/1/model/model.safetensors" ]'
check "denoising pretraining is done" 'grep -q "run 2 denoise: done  loss" "$T/out7denoise"'
"$B" export --what metrics --format csv --workspace "$W7" > "$T/m7.csv"
col() { awk -F, -v r="$1" -v c="$2" '$1 == r { print $c }' "$T/m7.csv"; }  # run, column
check "denoising steps carry whole texts (tokens at least 1.5x those of span corruption)" \
    'paste -d" " <(col 2 10) <(col 1 10) | awk "{ if (\$1 < 1.5 * \$2) bad++ } END { exit !(NR == 3 && !bad) }"'
check "denoise_fraction 0 is plain span corruption (same losses)" '[ "$(col 3 4)" = "$(col 1 4)" ] && [ -n "$(col 1 4)" ]'
# position_bias_lr_ratio: the same first loss (same init and batch), then other losses as
# the position biases take 100 times larger steps
check "position_bias_lr_ratio 100 trains the biases faster (same first loss, then different)" \
    '[ "$(col 4 4 | head -1)" = "$(col 1 4 | head -1)" ] && [ "$(col 4 4 | tail -n +2)" != "$(col 1 4 | tail -n +2)" ] && [ "$(col 4 4 | wc -l)" = 3 ]'
# 8. A rebuild during a sweep: the driver's binary is deleted after it started, and every
# run of the grid still starts (from the driver's own program) and finishes.
W8="$T/ws8"
cp "$B" "$T/lb-copy"
spec grid lora 4 ""
sed -i 's/"threads": 1 }/"threads": 1, "grid": { "lora.r": [1, 2, 3] } }/' "$T/grid.json"
"$T/lb-copy" sweep "$T/grid.json" --workspace "$W8" > "$T/out8" 2>&1 &
sweep_pid=$!
for _ in $(seq 100); do grep -q "runs queued" "$T/out8" && break; sleep 0.1; done
rm -f "$T/lb-copy"
wait "$sweep_pid"; rc=$?
check "sweep with its binary deleted exits 0" '[ $rc -eq 0 ]'
check "all three runs of that sweep are done" \
    '[ "$("$B" runs --json --workspace "$W8" | grep -o "\"status\":\"done\"" | wc -l)" -eq 3 ]'
# 9. What a newcomer reads (issue 20): a sweep's lines arrive while it runs (stdout to a
# file) and it ends with a results table; names say what differs; exports and show have no
# -1/nan; compare takes 1,2,3 and prints plain values with intervals; a mistyped workspace
# is refused, not created; a done run keeps no checkpoint.
W9="$T/ws9"
spec demo lora 4 ""
sed -i 's/"threads": 1 }/"threads": 1, "grid": { "method+train.lr": [["none", 0.003], ["lora", 0.003], ["full", 0.001]] } }/' "$T/demo.json"
LORABENCH_TEST_STEP_DELAY_MS=400 "$B" sweep "$T/demo.json" --workspace "$W9" > "$T/out9" 2> "$T/err9" &
sweep_pid=$!
early=0
for _ in $(seq 200); do
    kill -0 "$sweep_pid" 2>/dev/null || break
    grep -q "^run 1 demo-zero-shot: done" "$T/out9" && { early=1; break; }
    sleep 0.05
done
wait "$sweep_pid"
check "sweep > file: the first run's line is there while the sweep still runs" '[ $early -eq 1 ]'
check "zero-shot is named without a learning rate; trained runs keep theirs" \
    'grep -q "^run 1 demo-zero-shot: done" "$T/out9" && grep -q "^run 2 demo-lora-lr0.003: done" "$T/out9" && grep -q "^run 3 demo-full-lr0.001: done" "$T/out9"'
check "the sweep ends with its results table (3 rows, ROUGE-1 intervals)" \
    'grep -q "ROUGE-1 \[95% interval\]" "$T/out9" && [ "$(grep -cE "^ *[123]  demo-.* \[[0-9.]+, [0-9.]+\]" "$T/out9")" -eq 3 ]'
check "the sweep's zero-shot run is the pinned baseline" \
    '"$B" runs --json --workspace "$W9" | grep -q "{\"id\":1,\"name\":\"demo-zero-shot\".*\"pinned\":true.*\"id\":2"'
check "a done run keeps no checkpoint (its adapter or model stays)" \
    '[ ! -e "$W9/runs/2/checkpoint.safetensors" ] && [ ! -e "$W9/runs/3/checkpoint.safetensors" ] && [ -d "$W9/runs/2/adapter" ] && [ -f "$W9/runs/3/model/model.safetensors" ]'
"$B" export --what runs --format csv --workspace "$W9" > "$T/runs9.csv"
check "export csv: no -1 or nan (zero-shot's missing values are empty)" \
    '! grep -Eq "(^|,)(-1|nan|-nan)(,|$)" "$T/runs9.csv" && grep -q "^1,demo-zero-shot,done,none,,,," "$T/runs9.csv"'
check "export csv: the workbench's columns (and rougeLsum)" \
    '[ "$(head -1 "$T/runs9.csv")" = "id,name,status,method,r,alpha,targets,trainable,trainable_pct,steps,total_steps,loss,rouge1,rouge2,rougeL,rougeLsum,tokens_per_s,peak_rss_mb,duration_s,tags,notes" ]'
"$B" export --what runs --format json --workspace "$W9" > "$T/runs9.json"
check "export json: missing values are null" 'grep -q "\"r\":null,\"alpha\":null" "$T/runs9.json" && ! grep -q "nan" "$T/runs9.json"'
"$B" show 1 --workspace "$W9" > "$T/show9"
check "show of zero-shot has no nan" '! grep -qi "nan" "$T/show9" && grep -q "^  params" "$T/show9"'
# a run that failed before it counted its parameters (a model folder without weights)
mkdir -p "$T/noweights" && cp "$M/config.json" "$M/tokenizer.json" "$T/noweights/"
sed "s|\"base_model\": \"[^\"]*\"|\"base_model\": \"$T/noweights\"|; s/, \"grid\": {.*} }$/ }/" "$T/demo.json" > "$T/noweights.json"
"$B" train "$T/noweights.json" --workspace "$T/ws9b" > /dev/null 2>&1
"$B" show 1 --workspace "$T/ws9b" > "$T/show9b"
check "show of a run failed before counting has no nan, – instead" \
    'grep -q "status   failed" "$T/show9b" && ! grep -qi "nan" "$T/show9b" && grep -q "^  params   – trainable of –" "$T/show9b"'
"$B" compare 1,2,3 --workspace "$W9" > "$T/cmp9"; rc=$?
check "compare 1,2,3 works as export --runs does" '[ $rc -eq 0 ] && grep -q "#3 demo-full-lr0.001" "$T/cmp9"'
check "compare: plain values (no JSON quotes), whole names, integer tok/s" \
    '! grep -q "\"" "$T/cmp9" && grep -Eq "^tokens/s +– +[0-9]+ +[0-9]+ *$" "$T/cmp9" && grep -Eq "^lora.targets +– +q,v +– *$" "$T/cmp9"'
check "compare: zero-shot has no rank, ROUGE-1 has its interval" \
    'grep -Eq "^lora.r +– +4 +– *$" "$T/cmp9" && grep -Eq "^ROUGE-1 +[0-9.]+ \[[0-9.]+, [0-9.]+\]" "$T/cmp9"'
"$B" export --what sweep --format md --workspace "$W9" > "$T/sweep9.md"
check "export --what sweep --format md: a Markdown table with intervals and time" \
    'grep -q "^| id | run | status | method | r | targets | trainable | loss | ROUGE-1 \[95% interval\] | ROUGE-2 | ROUGE-L | time |$" "$T/sweep9.md" && [ "$(grep -c "^| [123] | demo-" "$T/sweep9.md")" -eq 3 ] && grep -q "^|---:|" "$T/sweep9.md"'
"$B" export --what sweep --format svg --workspace "$W9" > "$T/sweep9.svg"
check "export --what sweep --format svg: the loss curves of its two trained runs, with a legend of three" \
    'head -c 5 "$T/sweep9.svg" | grep -q "<svg " && [ "$(grep -c "<polyline" "$T/sweep9.svg")" -eq 2 ] && grep -q ">demo-zero-shot (no data)</text>" "$T/sweep9.svg" && tail -1 "$T/sweep9.svg" | grep -q "</svg>"'
"$B" export --what runs --format svg --workspace "$W9" > /dev/null 2> "$T/svg9.err"; rc=$?
check "export --format svg of runs is refused with what to use" '[ $rc -eq 2 ] && grep -q "use it with --what metrics, curves or sweep" "$T/svg9.err"'
# the same spec again: its name is numbered, not shared
sed -i 's/, "grid": {.*} }$/ }/' "$T/demo.json"
"$B" train "$T/demo.json" --workspace "$W9" > /dev/null 2>&1
"$B" train "$T/demo.json" --workspace "$W9" > /dev/null 2>&1
"$B" runs --workspace "$W9" > "$T/list9"
check "a name already used gets a number" 'grep -Eq "^ *4  demo  " "$T/list9" && grep -Eq "^ *5  demo \(2\) " "$T/list9"'
long=$(printf 'classroom-rank-sweep-with-a-long-name-r%s' 16)
sed -i "s/\"name\": \"demo\"/\"name\": \"$long\"/" "$T/demo.json"
"$B" train "$T/demo.json" --workspace "$W9" > /dev/null 2>&1
"$B" runs --workspace "$W9" > "$T/list9"
check "runs cuts a long name in the middle, keeping its end" 'grep -Eq "^ *6  classroom.*….*-r16 " "$T/list9"'
"$B" show 1 --workspace "$T/no-such-ws" > /dev/null 2> "$T/err9b"; rc=$?
check "show with a mistyped workspace is refused and creates nothing" \
    '[ $rc -ne 0 ] && [ ! -e "$T/no-such-ws" ] && grep -q "no workspace at $T/no-such-ws" "$T/err9b"'
"$B" runs --workspace "$T/no-such-ws" > /dev/null 2>&1; rc=$?
check "runs with a mistyped workspace is refused" '[ $rc -ne 0 ] && [ ! -e "$T/no-such-ws" ]'
check "tokenize --tokenizer takes a model folder as data does" \
    '[ "$(echo "\"hello world\"" | "$B" tokenize --tokenizer "$M")" = "$(echo "\"hello world\"" | "$B" tokenize --tokenizer "$M/tokenizer.json")" ]'
sed 's/"method": "lora"/"method": "none"/' "$T/demo.json" > "$T/zs.json"
"$B" train "$T/zs.json" --json --workspace "$W9" > "$T/zs9.json" 2> /dev/null
check "train --json: zero-shot's loss is null, not -1" 'grep -q "\"status\":\"done\",\"loss\":null,\"rouge1\":0" "$T/zs9.json"'
# a temporary spec (the workbench writes runs/ui-spec-*.json) is removed once read
cp "$T/demo.json" "$T/ui-spec-test.json"
"$B" train "$T/ui-spec-test.json" --delete-spec --workspace "$W9" > "$T/out9c" 2>&1; rc=$?
check "train --delete-spec removes the spec file once read, and the run is done" \
    '[ $rc -eq 0 ] && [ ! -e "$T/ui-spec-test.json" ] && grep -q ": done" "$T/out9c"'
# rm takes several ids, and deletes none when one is not a run (it used to delete only the last)
ids9=$(sqlite3 "$W9/lorabench.db" "SELECT id FROM runs ORDER BY id" | tr '\n' ' ')
set -- $ids9
a9=$1 b9=$2
"$B" rm "$a9" 99999 --workspace "$W9" > /dev/null 2> "$T/err9"; rc=$?
check "rm with an id that is not a run deletes nothing" \
    '[ $rc -ne 0 ] && grep -q "nothing deleted" "$T/err9" && [ "$(sqlite3 "$W9/lorabench.db" "SELECT COUNT(*) FROM runs WHERE id = $a9")" = 1 ]'
"$B" rm "$a9" "$b9" --workspace "$W9" > "$T/out9" 2>&1; rc=$?
check "rm A B deletes both runs and their folders" \
    '[ $rc -eq 0 ] && [ "$(sqlite3 "$W9/lorabench.db" "SELECT COUNT(*) FROM runs WHERE id IN ($a9, $b9)")" = 0 ] && [ ! -e "$W9/runs/$a9" ] && [ ! -e "$W9/runs/$b9" ]'
# cancel during the final evaluation stops within one generated batch (6 batches of 1, each
# held 1 s by the test hook) and resume evaluates again (issue 21, finding 9)
W10="$T/ws10"
spec evalcancel lora 2 ""
sed -i 's/"batch_size": 4/"batch_size": 1/' "$T/evalcancel.json"
LORABENCH_TEST_EVAL_DELAY_MS=1000 "$B" train "$T/evalcancel.json" --workspace "$W10" > /dev/null 2> "$T/err10" &
tp=$!
q10() { sqlite3 -cmd ".timeout 5000" "$W10/lorabench.db" "$@"; }
for _ in $(seq 400); do  # until the adapter is saved: training is over, the evaluation runs
    [ -f "$W10/runs/1/adapter/adapter_model.safetensors" ] && break
    sleep 0.05
done
t_cancel=$(date +%s.%N)
"$B" cancel 1 --workspace "$W10" > /dev/null 2>&1
wait "$tp"; rc10=$?
t_end=$(date +%s.%N)
check "cancel during the final evaluation: cancelled within a batch, saying so; train exits 143 (SIGTERM) ($rc10)" \
    '[ $rc10 -eq 143 ] && [ "$(q10 "SELECT status FROM runs WHERE id = 1")" = cancelled ] && q10 "SELECT error FROM runs WHERE id = 1" | grep -q "final evaluation" &&
     [ "$(q10 "SELECT COUNT(*) FROM evals WHERE run_id = 1")" = 0 ] && awk -v a="$t_cancel" -v b="$t_end" "BEGIN{exit !(b - a < 4)}"'
"$B" resume 1 --workspace "$W10" > /dev/null 2>&1; rc=$?
check "resume after a cancelled evaluation evaluates and finishes" \
    '[ $rc -eq 0 ] && [ "$(q10 "SELECT status FROM runs WHERE id = 1")" = done ] && [ "$(q10 "SELECT COUNT(*) FROM evals WHERE run_id = 1")" = 1 ]'

# 11. bench --profile: the kinds of work partition the step (with "other" they sum to the
# step's mean time); the parts named "of which" (LoRA's products, the lm_head's) are
# within the linear layers' time, and LoRA's is there only in a LoRA step.
for m in lora full; do
    "$B" bench --shape tests/fixtures/hf/t5-gated-a --method $m --batch 2 --src 8 --tgt 4 --steps 2 --warmup 0 --profile --json \
        > "$T/prof-$m.json" 2> "$T/prof-$m.err"
done
profile_ok() {  # file, 1 when LoRA's part must be there
    python3 - "$1" "$2" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().split("\n")
p = json.loads(lines[1])
main = ["linear fwd", "linear bwd", "attention fwd", "attention bwd", "norms", "activations",
        "dropout/residual", "cross-entropy", "embedding/bias", "optimizer", "other"]
total = sum(p[k] for k in main)
lin = p["linear fwd"] + p["linear bwd"]
lora, head = p["of which LoRA"], p["of which lm_head"]
ok = abs(total - p["profile_s_per_step"]) < 2e-3 and 0 < head <= lin + 1e-4
ok = ok and (0 < lora <= lin + 1e-4 if sys.argv[2] == "1" else lora == 0)
sys.exit(0 if ok else 1)
PY
}
check "bench --profile --json: the kinds sum to the step, LoRA's and the head's parts within linear" \
    'profile_ok "$T/prof-lora.json" 1 && profile_ok "$T/prof-full.json" 0'

# 12. bench --lora-dropout: the adapter's input dropout of a run, named in the JSON line and
# the configuration; a value outside [0, 1) is refused, naming the option.
"$B" bench --shape tests/fixtures/hf/t5-gated-a --lora-dropout 0.1 --batch 2 --src 8 --tgt 4 --steps 1 --warmup 0 --json \
    > "$T/bdrop.json" 2> "$T/bdrop.err"; rc=$?
check "bench --lora-dropout 0.1: the JSON line names it" \
    '[ $rc -eq 0 ] && grep -q "\"config\":\"lora r=8 q,v dropout 0.1\"" "$T/bdrop.json" && grep -q "\"lora_dropout\":0.1," "$T/bdrop.json"'
"$B" bench --lora-dropout 1.5 > /dev/null 2> "$T/bdrop.err"; rc=$?
check "bench --lora-dropout 1.5 is refused, naming the option" '[ $rc -eq 2 ] && grep -q "lora-dropout expects a probability in \[0, 1)" "$T/bdrop.err"'
echo "$pass passed, $fail failed"
