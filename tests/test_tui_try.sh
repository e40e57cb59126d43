#!/usr/bin/env bash
# The Try screen end to end: two runs trained from the command line (a LoRA adapter and a
# full fine-tune) on the fixture model, then the workbench in a private tmux server: select
# both, i, type an input, Enter; the base's and each run's outputs appear with their times
# and equal `generate --json` for the same text (the base loaded once, the full fine-tune
# once as its own); Tab takes a validation example; Esc goes back to the runs.
set -u
SOCK_PREFIX=lbtry
. tests/tui_common.sh
spec() {  # name method lr
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$M", "method": "$2",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 40, "max_target_tokens": 14 },
  "lora": { "r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"] },
  "train": { "max_steps": 6, "batch_size": 4, "lr": $3, "seed": 7 },
  "eval": { "limit": 4, "max_new_tokens": 8 },
  "threads": 1 }
JSON
}
spec try-lora lora 0.03
spec try-full full 0.003
"$B" train "$T/try-lora.json" --workspace "$W" > /dev/null 2>&1
"$B" train "$T/try-full.json" --workspace "$W" > /dev/null 2>&1
IN="summarize: a terminal tool for managing packages"
"$B" generate --model "$M" --adapter "$W/runs/1/adapter" --adapter "$W/runs/2/model" --include-base \
    --max-new-tokens 8 --max-source-tokens 40 --input "$IN" --json > "$T/cli" 2>/dev/null
text() { grep "\"adapter\": $1," "$T/cli" | sed 's/.*"text": "\(.*\)", "ms".*/\1/'; }
check "generate made three outputs to compare with" '[ $(wc -l < "$T/cli") -eq 3 ]'

tm -f /dev/null new-session -d -s lb -x 120 -y 40 "cd '$PWD' && '$B' --workspace '$W'; echo EXITED; sleep 60"
check "workbench shows both runs" 'wait_for "^ +2 try-full +done" 10 && wait_for "^ +1 try-lora +done" 2'
keys g Space Space i
check "i opens Try with the base and both runs" \
    'wait_for "lorabench │ Try" 5 && on_screen "base \\(zero-shot\\)" && on_screen "#2 try-full" && on_screen "#1 try-lora"'
check "the input starts with the runs' prefix" 'on_screen "│ summarize:_"'
keys C-u "$IN" Enter
check "outputs appear, the base loaded once and the fine-tune once" 'wait_for "done; 2 model loads in .*the base once, 1 full fine-tune" 30'
line() { grep -E "^ $1 " "$T/screen"; }
check "base output and time as generate's" 'line "base \\(zero-shot\\)" | grep -qE "[0-9.]+ ms  $(text null | sed "s/[][\\.*^$]/\\\\&/g") *$"'
check "adapter output as generate's" 'line "#1 try-lora" | grep -qE "[0-9.]+ ms  $(text "\"$W/runs/1/adapter\"" | sed "s/[][\\.*^$]/\\\\&/g") *$"'
check "fine-tune output as generate's" 'line "#2 try-full" | grep -qE "[0-9.]+ ms  $(text "\"$W/runs/2/model\"" | sed "s/[][\\.*^$]/\\\\&/g") *$"'
cp "$T/screen" "$T/try-screen"
keys Tab
check "Tab puts a validation example in the input" 'wait_for "validation example 1 of 4" 5 && ! on_screen "managing packages_"'
keys Enter
check "generating the example needs no load" 'wait_for "done; 2 model loads" 30'
keys Escape
check "Esc goes back to the runs" 'wait_for "lorabench │ Runs" 5 && on_screen " 1 try-lora +done"'
keys q
check "q quits" 'wait_for "^EXITED" 5'
[ -n "${TRY_SCREEN_OUT:-}" ] && cp "$T/try-screen" "$TRY_SCREEN_OUT"
echo "$pass passed, $fail failed"
