#!/usr/bin/env bash
# End to end through the workbench: the real binary in a private tmux server (120x40) on a
# temporary workspace, driven with keys and checked with capture-pane. From the new-run
# form (model and data set preselected through LORABENCH_DEFAULT_MODEL/_DATASET) a LoRA
# run starts (the preset's grid unticked) and reaches done in the runs table, the cursor on
# it; a second one with another rank follows; q on a choice field does not quit;
# compare shows both names with their ROUGE-1; the Start path also works for the methods
# none, full and partial; a broken model path is refused in the form with a message;
# a run whose worker fails shows as failed with its error; ? opens help, q quits and the
# terminal is back in its normal mode.
set -u
SOCK_PREFIX=lbtui
. tests/tui_common.sh
# wait_done ID NAME [MORE]: the run's row reaches an end state, which must be done (a
# failed run ends the wait at once)
wait_done() {
    wait_for "^ +$1 $2 +(done|failed|interrupted|cancelled)" 60 && on_screen "^ +$1 $2 +done +${3:-}"
}

# The pane runs the workbench, then reports how it ended and the terminal's mode.
tm -f /dev/null new-session -d -s lb -x 120 -y 40 \
    "cd '$PWD' && LORABENCH_DEFAULT_MODEL='$M' LORABENCH_DEFAULT_DATASET='$T/data' '$B' --workspace '$W'; \
     echo \"EXITED rc=\$?\"; stty -a | tr ' ;' '\n\n' | grep -Ex -- '-?(icanon|echo)' | tr '\n' ' '; echo; sleep 120"

check "workbench opens on an empty workspace" 'wait_for "No runs yet" 10'
if [ "$fail" -ne 0 ]; then  # nothing else can work
    echo "$pass passed, $fail failed"
    exit 1
fi

# --- the new-run form: preselected model and data set, presets loaded (quick-demo first)
keys n
# a letter on a choice field fires no shortcut: q on Method neither quits nor leaves
keys Down Down Down q
check "q on the Method field does not quit" 'wait_for "letters type only into text fields" 5 && wait_for "New run" 1'
keys Up Up Up
check "form opens" 'wait_for "Base model" 5'
# a path longer than the field shows its end after an ellipsis (checkouts can live deep)
check "form: base model from LORABENCH_DEFAULT_MODEL" 'wait_for "Base model +.*tests/fixtures/hf/t5-gated-a$" 3'
check "form: data set from LORABENCH_DEFAULT_DATASET" 'wait_for "Data set +.*/data$" 3'
check "form: quick-demo is the first preset" 'wait_for "Preset .*quick-demo" 3'
check "form: live trainable count" 'wait_for "trainable 12,288 of 287,744" 3'

# Fills the form from the Name field: name, rank (for lora), max steps; unticks the
# preset's grid (one run); then Start.
# Fields from Name down: Model, Data, Method, Rank, Alpha, Dropout, rsLoRA, Targets,
# Stacks, Attention, Layers, (Top blocks: partial only), Learning rate, Batch, Max steps.
start_lora() {  # name rank
    keys C-u "$1"
    repeat 4 Down; keys C-u "$2"
    repeat 10 Down; keys C-u 8
    repeat 4 Down  # Epochs, Eval examples, Eval beams, Grid
    wait_for "Grid +\\[" 5 || return 1
    on_screen "Grid +\\[x\\]" && keys Space
    wait_for "Start runs 1 run" 5 || return 1
    keys Down
    wait_for "Enter starts in the background" 5 && wait_for "Max steps +8$" 1 &&
        wait_for "Rank r +$2$" 1 && keys Enter
}
check "first run started from the form" 'start_lora tui-r4 4 && wait_for "starting tui-r4" 5'
check "first run reaches done" 'wait_done 1 tui-r4'
check "first run: 8 of 8 steps, ROUGE-1 shown" 'wait_for "tui-r4 +done +lora +4 .* 8/8 .*[0-9]\.[0-9]{3} +[0-9]\.[0-9]{3}" 3'

keys n
check "form reopens on Name with the last values" 'wait_for "Name +tui-r4_" 5'
check "second run (rank 2) started" 'start_lora tui-r2 2 && wait_for "starting tui-r2" 5'
check "second run reaches done" 'wait_done 2 tui-r2'

# --- compare both: select the two rows with Space (from the first row, g), then c
keys g Space Space c
check "compare opens" 'wait_for "1 Metrics" 5'
json=$("$B" runs --json --workspace "$W")
r1() { printf '%s' "$json" | tr '{' '\n' | grep "\"name\":\"$1\"" | sed 's/.*"rouge1":\([^,]*\),.*/\1/'; }
r1a=$(printf '%.3f' "$(r1 tui-r4)"); r1b=$(printf '%.3f' "$(r1 tui-r2)")
check "compare shows both names" 'wait_for "tui-r4" 3 && wait_for "tui-r2" 3'
check "compare shows tui-r4 with its ROUGE-1 $r1a" 'wait_for "tui-r4.* $r1a" 3'
check "compare shows tui-r2 with its ROUGE-1 $r1b" 'wait_for "tui-r2.* $r1b" 3'
check "compare shows the ROUGE-1 bars" 'wait_for "ROUGE-1 with 95% interval" 3'
keys Escape
check "Esc goes back to the runs" 'wait_for "2 runs, 0 running" 5'

# --- the other methods through the same Start path (method: Name, Model, Data, Method)
start_method() {  # name keys-that-change-the-method...
    keys n
    wait_for "Name +[a-z0-9-]*_" 5 || return 1
    keys C-u "$1"; shift
    repeat 3 Down; keys "$@"
    repeat 3 Up; repeat 2 Up  # Name, then Preset, then round to Start
    wait_for "Enter starts in the background" 5 && keys Enter
}
check "method none started" 'start_method tui-none Left && wait_for "starting tui-none" 5'
check "method none reaches done" 'wait_done 3 tui-none none'
check "method full started" 'start_method tui-full Right Right && wait_for "starting tui-full" 5'
check "method full reaches done" 'wait_done 4 tui-full full'
check "method partial started" 'start_method tui-partial Right && wait_for "starting tui-partial" 5'
check "method partial reaches done" 'wait_done 5 tui-partial partial'
methods=$("$B" runs --json --workspace "$W" | tr '{' '\n' | sed -n 's/.*"name":"\(tui-[a-z0-9]*\)","status":"\([a-z]*\)","method":"\([a-z]*\)".*/\1 \2 \3/p' | sort | tr '\n' ' ')
check "store: five runs done with their methods ($methods)" \
    '[ "$methods" = "tui-full done full tui-none done none tui-partial done partial tui-r2 done lora tui-r4 done lora " ]'

check "the form's spec files are removed once their runs are recorded" '[ -z "$(ls "$W"/runs/ui-spec-*.json 2>/dev/null)" ]'

# --- a model folder without weights is refused in the form, nothing is recorded
mkdir -p "$T/noweights" && cp "$M/config.json" "$M/tokenizer.json" "$T/noweights/"
keys n
wait_for "Name +[a-z0-9-]*_" 5
keys Down C-u "$T/noweights"
check "form warns about the missing weights" 'wait_for "warning: .*has no model.safetensors" 5'
keys Up Up Up
wait_for "Enter starts in the background" 5 && keys Enter
check "Start refuses it with a message naming base_model" 'wait_for "base_model: .*noweights has no model.safetensors" 5'
check "still on the form" 'wait_for "New run" 3'
keys Escape
check "leaving the changed form asks" 'wait_for "Leave the form without starting\\?" 5'
keys y
check "nothing was recorded" 'wait_for "5 runs, 0 running" 5'

# --- a data folder that is not a data set is said under its field, and Start refuses it
mkdir -p "$T/empty"
keys n
wait_for "Name +[a-z0-9-]*_" 5
keys C-u tui-bad Down C-u "$M" Down C-u "$T/empty"
check "a data folder without data: the message is under the Data set field" \
    'wait_for "^ +dataset.path: data set directory .*/empty holds no train" 5'
keys Up Up Up Up
wait_for "Enter starts in the background" 5 && keys Enter
check "Start refuses it, naming the field (focus back on it)" 'wait_for "^ ?Data set: dataset.path" 5 && wait_for "Data set +.*/empty_" 2'

# --- a run whose worker fails (a model whose tokenizer.json is broken) shows as failed with its error
mkdir -p "$T/badtok" && cp "$M/config.json" "$M/model.safetensors" "$T/badtok/" && echo '{}' > "$T/badtok/tokenizer.json"
keys C-u "$T/data" Up C-u "$T/badtok"
keys Up Up Up
wait_for "Enter starts in the background" 5 && keys Enter
check "failing run shows as failed" 'wait_for "^ +6 tui-bad +failed" 30'
check "after Start the cursor went to the new run" 'wait_for "^ #6 tui-bad " 3'
keys g
check "its error is shown under the table" 'wait_for "^ error: .*$T/badtok" 5'

# --- help and quit
keys '?'
check "? opens the help of the runs screen" 'wait_for "Keys: Runs" 5 && wait_for "On every screen" 3'
keys q
check "q quits with status 0" 'wait_for "EXITED rc=0" 10'
check "terminal restored (icanon echo)" 'wait_for "^icanon echo" 5'
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
