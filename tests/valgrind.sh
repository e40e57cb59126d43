#!/usr/bin/env bash
# The engine's test programs under valgrind (issue 11): no definite leak and no invalid
# read or write. Not part of `make test` (about 35 s on 2 cores, and the ASan build cannot
# run under valgrind); .ci/run calls it after the tests:  bash tests/valgrind.sh build
# Optional further arguments replace the list of programs (names in BUILD/tests/).
# test_t5 and test_generate are left out: they need 11 and 21 minutes under valgrind (both
# were run once, clean: RELIABILITY.md). test_gemm_bf16 runs here as on a CPU without bf16
# products (valgrind's virtual CPU has no AVX-512): the refusals and fp32 fallbacks.
set -u
dir="${1:-build}/tests"
shift || true
progs=("$@")
[ ${#progs[@]} -gt 0 ] || progs=(test_safetensors test_lora_files test_lora_t5 test_tokenizer test_spm test_rouge
    test_data test_optim test_sha256 test_spancorrupt test_faults test_grad test_gemm_bf16
    test_tui_screens)
if ! command -v valgrind > /dev/null; then
    echo "valgrind is not installed (apt-get install valgrind)"
    echo "0 passed, 1 failed"
    exit 1
fi
export OPENBLAS_NUM_THREADS=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
pass=0 fail=0
for p in "${progs[@]}"; do
    if [ ! -x "$dir/$p" ]; then
        echo "FAIL $p: $dir/$p is not built (make first)"
        fail=$((fail + 1))
        continue
    fi
    start=$(date +%s)
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9 \
        "$dir/$p" > "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ] && ! grep -q "definitely lost" "$log"; then
        echo "ok   $p (${secs} s)"
        pass=$((pass + 1))
    else
        if [ $rc -eq 9 ]; then echo "FAIL $p: valgrind found errors or definite leaks (${secs} s)"
        else echo "FAIL $p: exit $rc (${secs} s)"; fi
        grep -E "^==[0-9]+== (Invalid|Conditional|Use of|[0-9,]+ bytes in|   (at|by) )" "$log" | head -n 30
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
