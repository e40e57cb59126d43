#!/bin/bash
# lorabench rouge: per-line scores, aggregate line, multi-reference, errors, --stem-words.
B="$1/lorabench"; pass=0; fail=0; T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
check() { if eval "$2"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $1"; fi; }
printf '{"prediction":"the cat sat","target":"the cat sat"}\n{"prediction":"a b c d","targets":["a b","a b c d x x x x"]}\n' > "$T/in.jsonl"
"$B" rouge --jsonl "$T/in.jsonl" > "$T/out" 2>"$T/err"; rc=$?
check "exit 0" '[ $rc -eq 0 ]'
check "three lines" '[ $(wc -l < "$T/out") -eq 3 ]'
check "exact match is 1" 'head -1 "$T/out" | grep -q "\"rouge1\":\[1,1,1\]"'
check "multi-ref rouge2 picks second" 'sed -n 2p "$T/out" | grep -q "\"rouge2\":\[1,0.42857142857142855,0.6\]"'
check "aggregate line" 'tail -1 "$T/out" | grep -q "\"aggregate\":{\"n\":2"'
"$B" rouge --jsonl "$T/in.jsonl" --seed 5 > "$T/o1"; "$B" rouge --jsonl "$T/in.jsonl" --seed 5 > "$T/o2"
check "seeded aggregate reproducible" 'cmp -s "$T/o1" "$T/o2"'
printf '{"prediction":"x","target":"x"}\n{"prediction":"y"}\n' > "$T/bad.jsonl"
"$B" rouge --jsonl "$T/bad.jsonl" >/dev/null 2>"$T/err"; rc=$?
check "bad line fails" '[ $rc -ne 0 ]'
check "error names file and line" 'grep -q "bad.jsonl:2:" "$T/err"'
check "stem-words" '[ "$(printf "running dogs\nsky generously\n" | "$B" rouge --stem-words | tr "\n" " ")" = "run dog sky gener " ]'
# rouge stems by default as eval and the runs' evaluations do, so their numbers compare
printf '{"prediction":"running dogs","target":"run dog"}\n' > "$T/stem.jsonl"
check "stems by default, like eval" 'head -1 <("$B" rouge --jsonl "$T/stem.jsonl") | grep -q "\"rouge1\":\[1,1,1\]"'
check "--no-stem scores the words as they are" 'head -1 <("$B" rouge --jsonl "$T/stem.jsonl" --no-stem) | grep -q "\"rouge1\":\[0,0,0\]"'
check "the aggregate says it stemmed" 'tail -1 <("$B" rouge --jsonl "$T/stem.jsonl") | grep -q "\"stem\":true"'
check "--help" '"$B" rouge --help | grep -q "usage: lorabench rouge"'
echo "$pass passed, $fail failed"
