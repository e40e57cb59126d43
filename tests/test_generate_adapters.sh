#!/usr/bin/env bash
# lorabench generate with several adapters: the base is loaded once (the --stats count and,
# where strace is installed, the opens of model.safetensors) and each adapter applied to it
# in turn; the outputs equal separate generate calls text for text; --json's lines; a full
# fine-tune's model folder loads as a model of its own; --switch merge gives the same texts
# in fp32; bad folders and option mixes get a message.
set -u
B="$1/lorabench"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. tests/e2e_common.sh
spec() {  # name method lr
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$M", "method": "$2",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": { "r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"] },
  "train": { "max_steps": 6, "batch_size": 4, "lr": $3, "seed": 7 },
  "eval": { "limit": 2, "max_new_tokens": 4 },
  "threads": 1 }
JSON
}
spec lora lora 0.03
spec full full 0.003
"$B" train "$T/lora.json" --workspace "$W" > /dev/null 2>&1
"$B" train "$T/full.json" --workspace "$W" > /dev/null 2>&1
A1="$M/adapter" A2="$W/runs/1/adapter" FT="$W/runs/2/model"
check "two runs trained (an adapter and a model)" '[ -f "$A2/adapter_config.json" ] && [ -f "$FT/model.safetensors" ]'
IN1="summarize: a terminal tool for managing packages" IN2="summarize: library for parsing JSON"
gen() { "$B" generate --model "$M" --max-new-tokens 10 --input "$IN1" --input "$IN2" "$@"; }

# 1. Two adapters and the base in one call against three separate calls.
gen --adapter "$A1" --adapter "$A2" --include-base --json --stats > "$T/all" 2> "$T/stats"; rc=$?
check "two adapters + base: exit 0" '[ $rc -eq 0 ]'
check "--json: one line per input and variant (2 x 3)" '[ $(wc -l < "$T/all") -eq 6 ]'
check "--json: the base is null, adapters by folder, each with ms" \
    '[ $(grep -c "^{\"input\": [01], \"adapter\": null, \"text\": \".*\", \"ms\": [0-9.]*}$" "$T/all") -eq 2 ] &&
     [ $(grep -c "\"adapter\": \"$A1\", \"text\": \".*\", \"ms\": [0-9.]*}$" "$T/all") -eq 2 ] &&
     [ $(grep -c "\"adapter\": \"$A2\", \"text\": \".*\", \"ms\": [0-9.]*}$" "$T/all") -eq 2 ]'
check "the model was loaded once for three outputs" 'grep -q "^model loads 1 in .*2 adapters applied to the loaded base (attach)" "$T/stats"'
if command -v strace > /dev/null; then
    strace -f -e trace=openat -o "$T/trace" "$B" generate --model "$M" --adapter "$A1" --adapter "$A2" --include-base \
        --input "$IN1" > /dev/null 2>&1
    check "strace: $M/model.safetensors opened once" '[ $(grep -c "t5-gated-a/model.safetensors\"" "$T/trace") -eq 1 ]'
fi
text() {  # file input adapter-json
    grep "^{\"input\": $2, \"adapter\": $3," "$1" | sed 's/.*"text": \(".*"\), "ms".*/\1/'
}
gen --json > "$T/base"
gen --adapter "$A1" --json > "$T/a1"
gen --adapter "$A2" --json > "$T/a2"
same=1
for i in 0 1; do
    [ "$(text "$T/all" $i null)" = "$(text "$T/base" $i null)" ] || same=0
    [ "$(text "$T/all" $i "\"$A1\"")" = "$(text "$T/a1" $i "\"$A1\"")" ] || same=0
    [ "$(text "$T/all" $i "\"$A2\"")" = "$(text "$T/a2" $i "\"$A2\"")" ] || same=0
done
check "each output equals its separate generate call, text for text" '[ $same -eq 1 ] && [ -n "$(text "$T/all" 0 null)" ]'
check "the adapters change the output (the comparison means something)" \
    '[ "$(text "$T/all" 0 null)" != "$(text "$T/all" 0 "\"$A2\"")" ] || [ "$(text "$T/all" 1 null)" != "$(text "$T/all" 1 "\"$A2\"")" ]'
gen --adapter "$A1" > "$T/plain1"
gen > "$T/plain0"
gen --adapter "$A1" --include-base > "$T/plain2"
check "without --json: one adapter prints as before, several under # lines" \
    '[ $(wc -l < "$T/plain1") -eq 2 ] && [ "$(cat "$T/plain2")" = "$(printf "# base\n%s\n# %s\n%s" "$(cat "$T/plain0")" "$A1" "$(cat "$T/plain1")")" ]'

# 2. --switch merge: the same texts in fp32; a full fine-tune is a model of its own.
gen --adapter "$A1" --adapter "$A2" --include-base --json --switch merge > "$T/merge"
same=1
for v in null "\"$A1\"" "\"$A2\""; do for i in 0 1; do
    [ "$(text "$T/merge" $i "$v")" = "$(text "$T/all" $i "$v")" ] || same=0
done; done
check "--switch merge gives the attach texts" '[ $same -eq 1 ]'
gen --adapter "$A1" --adapter "$FT" --json --stats > "$T/ft" 2> "$T/stats"
"$B" generate --model "$FT" --max-new-tokens 10 --input "$IN1" --input "$IN2" --json > "$T/ft1" 2>/dev/null
check "a model folder loads as its own model (two loads)" 'grep -q "^model loads 2 " "$T/stats"'
check "its texts equal generate --model on it" \
    '[ "$(text "$T/ft" 0 "\"$FT\"")" = "$(text "$T/ft1" 0 null)" ] && [ "$(text "$T/ft" 1 "\"$FT\"")" = "$(text "$T/ft1" 1 null)" ]'

# 3. --dataset and --batch name the adapter on each line when there are several.
"$B" generate --model "$M" --adapter "$A1" --include-base --dataset "$T/data" --limit 2 --max-new-tokens 4 > "$T/ds"
check "--dataset: 2 lines per variant, each naming it" \
    '[ $(grep -c "^{\"index\": [01], \"adapter\": null, \"prediction\"" "$T/ds") -eq 2 ] && [ $(grep -c "\"adapter\": \"$A1\", \"prediction\"" "$T/ds") -eq 2 ]'
"$B" generate --model "$M" --adapter "$A1" --adapter "$A2" --batch "$M/batch.json" --max-new-tokens 4 > "$T/b"
check "--batch: one object per adapter" '[ $(wc -l < "$T/b") -eq 2 ] && [ $(grep -c "\"adapter\": \"" "$T/b") -eq 2 ]'

# 4. Errors.
gen --adapter "$T" 2> "$T/err"; rc=$?
check "a folder with neither adapter nor model is refused by name" '[ $rc -ne 0 ] && grep -q "$T has neither adapter_config.json" "$T/err"'
gen --include-base 2> "$T/err"; rc=$?
check "--include-base without --adapter is refused" '[ $rc -ne 0 ] && grep -q -- "--include-base goes with --adapter" "$T/err"'
"$B" generate --model "$M" --batch "$M/batch.json" --json 2> "$T/err"; rc=$?
check "--json without --input is refused" '[ $rc -ne 0 ] && grep -q -- "--json goes with --input" "$T/err"'
gen --adapter "$A1" --switch swap 2> "$T/err"; rc=$?
check "--switch swap is refused" '[ $rc -ne 0 ] && grep -q -- "--switch must be attach or merge" "$T/err"'
echo "$pass passed, $fail failed"
