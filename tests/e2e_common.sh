# Sourced by the command-line end-to-end tests after they set $T (their temporary folder):
# the pass/fail counters and check(), the workspace $W, the fixture model $M, and a small
# debsum slice in $T/data (48 training pairs, 6 validation pairs).
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
W="$T/ws"
M="$PWD/tests/fixtures/hf/t5-gated-a"
mkdir -p "$T/data"
head -n 48 experiments/data/debsum/train.jsonl > "$T/data/train.jsonl"
head -n 6 experiments/data/debsum/validation.jsonl > "$T/data/validation.jsonl"
