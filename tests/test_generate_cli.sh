#!/bin/bash
# lorabench generate --batch against Hugging Face's generate() (fixture gen.json: greedy and
# beam-4 ids and texts), --input, errors, --help; bench --generate (its output, not its speed).
B="$1/lorabench"; F=tests/fixtures/hf/t5-gated-a; pass=0; fail=0; T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
check() { if eval "$2"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $1"; fi; }
G1='{"ids": [[0, 54, 125, 269, 3, 38, 9, 46, 4, 3, 38, 46, 45], [0, 88, 10, 40, 18, 7, 19, 35, 18, 7, 19, 35, 18], [0, 3, 4, 3, 4, 3, 4, 3, 4, 3, 4, 3, 4]], "text": ["Common vdks vkit", "Gobert-gert-ger", "s s s s s s"]}'
G4='{"ids": [[0, 54, 125, 269, 45, 30, 47, 9, 464, 107, 51, 1], [0, 88, 50, 18, 49, 30, 104, 231, 107, 1, 1, 1], [0, 88, 50, 18, 49, 30, 16, 3, 4, 1, 1, 1]], "text": ["Commonitor (development files)", "Generator - development files", "Generator for s"]}'
"$B" generate --model $F --batch $F/batch.json --max-new-tokens 12 > "$T/g1" 2>"$T/err"; rc=$?
check "greedy exit 0" '[ $rc -eq 0 ]'
check "greedy ids and text as gen.json" '[ "$(cat "$T/g1")" = "$G1" ]'
"$B" generate --model $F --batch $F/batch.json --max-new-tokens 12 --beams 4 > "$T/g4" 2>"$T/err"
check "beam-4 ids and text as gen.json" '[ "$(cat "$T/g4")" = "$G4" ]'
"$B" generate --model $F --batch $F/batch.json --max-new-tokens 12 --beams 4 --no-cache > "$T/g4n"
check "no-cache gives the same" '[ "$(cat "$T/g4n")" = "$G4" ]'
"$B" generate --model $F --input "summarize: a terminal tool" --input "summarize: a library" > "$T/in" 2>"$T/err"; rc=$?
check "--input prints one line per text" '[ $rc -eq 0 ] && [ $(wc -l < "$T/in") -eq 2 ]'
"$B" generate --model $F --batch "$T/none.json" 2>"$T/err"; rc=$?
check "missing batch file fails" '[ $rc -ne 0 ] && grep -q "none.json" "$T/err"'
echo '{"input_ids": [[4, 5], [6]]}' > "$T/ragged.json"
"$B" generate --model $F --batch "$T/ragged.json" 2>"$T/err"; rc=$?
check "ragged rows refused" '[ $rc -ne 0 ] && grep -q "input_ids\"\[1\]" "$T/err"'
"$B" generate --model $F --batch $F/batch.json --beams 0 2>"$T/err"; rc=$?
check "--beams 0 refused" '[ $rc -ne 0 ] && grep -q -- "--beams" "$T/err"'
check "--help" '"$B" generate --help | grep -q "usage: lorabench generate"'
"$B" bench --generate --shape $F --batch 2 --src 8 --new 6 --rounds 1 --warmup 0 --json > "$T/bg" 2>"$T/err"; rc=$?
check "bench --generate: one JSON line per beam count" '[ $rc -eq 0 ] && [ $(wc -l < "$T/bg") -eq 2 ] && grep -q "\"num_beams\":1," "$T/bg" && grep -q "\"num_beams\":4," "$T/bg"'
check "bench --generate: fixed length, tokens/s and precision" '[ $(grep -c "\"new_tokens\":6,.*\"tokens_per_s\":[1-9]" "$T/bg") -eq 2 ] && grep -q "\"precision\":\"fp32\"" "$T/bg"'
"$B" bench --generate --shape $F --beams 0 2>"$T/err"; rc=$?
check "bench --generate --beams 0 refused" '[ $rc -eq 2 ] && grep -q -- "--beams" "$T/err"'
"$B" bench --generate --shape $F --precision fp16 2>"$T/err"; rc=$?
check "bench --generate --precision fp16 refused" '[ $rc -eq 2 ] && grep -q "fp32 or bf16" "$T/err"'
echo "$pass passed, $fail failed"
