#!/usr/bin/env bash
# The first session as README's "A first session" tells it, driven in a private tmux server
# (120x40) on a new, empty workspace: n opens the form with quick-demo loaded, Start (Up Up
# from Name, then Enter) starts its grid. Its
# three runs (zero-shot, LoRA, full fine-tune) must finish, and Space on each, then c,
# shows them side by side. To stay fast the session's model and data set are the small
# test fixture and a 16-example slice (LORABENCH_DEFAULT_MODEL/_DATASET, as README's
# --model/--dataset); the keys are README's.
set -u
SOCK_PREFIX=lbfirst
. tests/tui_common.sh

tm -f /dev/null new-session -d -s lb -x 120 -y 40 \
    "cd '$PWD' && LORABENCH_DEFAULT_MODEL='$M' LORABENCH_DEFAULT_DATASET='$T/data' '$B' --workspace '$W'; sleep 60"

check "a new workspace opens empty" 'wait_for "No runs yet" 10'
keys n
check "n opens the form with quick-demo" 'wait_for "Preset .*quick-demo" 5'
check "the form says Start runs quick-demo's grid of 3 runs and about how long" \
    'wait_for "Start runs the preset.s grid: 3 runs, about [0-9]" 5'
# press Start: Up from Name is Preset, Up again wraps to Start
keys Up Up
check "Start is focused" 'wait_for "Enter starts in the background" 5'
keys Enter
check "Start starts the grid" 'wait_for "starting the grid of quick-demo: 3 runs" 5'
# all three rows done (a failed, interrupted or cancelled one ends the wait)
three_done() {
    local end=$(($(date +%s) + $1))
    while [ "$(date +%s)" -lt "$end" ]; do
        tm capture-pane -p -t lb > "$T/screen" 2>/dev/null
        [ "$(grep -cE "^ +(◆ +)?[0-9]+ +quick-demo.* done " "$T/screen")" = 3 ] && return 0
        grep -qE "^ +(◆ +)?[0-9]+ +quick-demo.* (failed|interrupted|cancelled) " "$T/screen" && break
        sleep 0.2
    done
    sed 's/^/  | /' "$T/screen"
    return 1
}
check "three runs finish" 'three_done 120'
methods=$("$B" runs --json --workspace "$W" | tr '{' '\n' | sed -n 's/.*"status":"\([a-z]*\)","method":"\([a-z]*\)".*/\2 \1/p' | sort | tr '\n' ' ')
check "zero-shot, LoRA and full fine-tune are done ($methods)" '[ "$methods" = "full done lora done none done " ]'
# select the three (from the first row) and compare them
keys g Space Space Space c
check "compare opens" 'wait_for "1 Metrics" 5'
check "compare shows the three side by side" \
    'wait_for "^ A #3 quick-demo" 3 && wait_for "^ B #2 quick-demo" 1 && wait_for "^ C #1 quick-demo" 1'
check "with their ROUGE bars" 'wait_for "ROUGE-1 with 95% interval" 3'
# the grid is a sweep: its screen draws the lecture's picture, the LoRA point against the
# zero-shot and full fine-tune reference lines, with the trainable parameters
keys Escape w
check "the Sweep screen shows ROUGE-L with intervals by rank" 'wait_for "ROUGE-L with 95% interval by rank" 5'
check "with zero-shot and the full fine-tune as reference lines" \
    'wait_for "zero-shot #[0-9]+ [0-9.]+ +┃ full fine-tune #[0-9]+ [0-9.]+" 3 && wait_for "^ r=8 +[0-9.]+k " 1'
keys v
check "v shows the sweep's loss curves overlaid" 'wait_for "loss, EMA" 3 && wait_for "A r=8.*B full" 1'
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
