# Sourced by the tmux-driven workbench tests after `set -u`, with $1 the build folder and
# SOCK_PREFIX set: the binary $B, the temporary folder $T (removed at exit with the private
# tmux server and any worker still running on its workspace), check() and its counters, the
# workspace $W, the fixture model $M, a 16-example debsum slice in $T/data, and the tmux
# helpers tm, keys, repeat, wait_for and on_screen.
B="$1/lorabench"
case "$B" in /*) ;; *) B="$PWD/$B" ;; esac
T=$(mktemp -d)
SOCK="$SOCK_PREFIX-$$-$RANDOM"
cleanup() {
    tmux -L "$SOCK" kill-server 2>/dev/null
    # a sweep's queue runner and workers started on this workspace, if any still run
    for p in $(ps -eo pid=,args= | awk -v w="$T/ws" 'index($0, w) { print $1 }'); do kill "$p" 2>/dev/null; done
    rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$SOCK"  # the server leaves its socket file
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
if ! command -v tmux > /dev/null; then
    echo "FAIL tmux is not installed (make deps installs it)"
    echo "0 passed, 1 failed"
    exit 1
fi

W="$T/ws"
M="$PWD/tests/fixtures/hf/t5-gated-a"
mkdir -p "$T/data"
head -n 16 experiments/data/debsum/train.jsonl > "$T/data/train.jsonl"
head -n 4 experiments/data/debsum/validation.jsonl > "$T/data/validation.jsonl"

tm() { tmux -L "$SOCK" "$@"; }
keys() { tm send-keys -t lb "$@"; }
# n times the same key
repeat() { local n=$1 k=$2 i; for ((i = 0; i < n; i++)); do keys "$k"; done; }
# wait_for REGEX [SECONDS]: polls the pane until a line matches (the pane is left in
# $T/screen); no fixed sleeps anywhere.
wait_for() {
    local end=$(($(date +%s%N) / 1000000 + ${2:-10} * 1000))
    while :; do
        tm capture-pane -p -t lb > "$T/screen" 2>/dev/null
        grep -qE -- "$1" "$T/screen" && return 0
        [ $(($(date +%s%N) / 1000000)) -ge $end ] && {
            echo "  (timed out waiting for /$1/; the screen was:)"
            sed 's/^/  | /' "$T/screen"
            return 1
        }
        sleep 0.1
    done
}
on_screen() { grep -qE -- "$1" "$T/screen"; }
