#!/usr/bin/env bash
# Runs every test program in $1 (build/tests) and every tests/test_*.sh, sums their
# "N passed, N failed" lines and prints the total last.
set -u
bindir=${1:-build/tests}
total_p=0; total_f=0; broken=0
run_one() {
    local name=$1; shift
    local out rc line p f
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -E '^(FAIL|    )' | sed "s|^|[$name] |"
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -z "$line" ]; then
        echo "[$name] crashed or printed no summary (exit $rc); last lines:"
        printf '%s\n' "$out" | tail -n 15 | sed "s|^|[$name]   |"
        total_f=$((total_f + 1)); broken=1; return
    fi
    p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "[$name] exit $rc"; fi
    echo "$name: $p passed, $f failed"
    total_p=$((total_p + p)); total_f=$((total_f + f))
}
for t in "$bindir"/test_*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    run_one "$(basename "$t" .sh)" bash "$t" "$(dirname "$bindir")"
done
echo "$total_p passed, $total_f failed"
[ "$total_f" -eq 0 ]
