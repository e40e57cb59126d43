#!/usr/bin/env bash
# The Analysis screen and `analyze --run`, end to end: three short runs of the fixture (LoRA
# r=4 on q,v; rsLoRA r=8 on every module; a full fine-tune), then
#   - analyze --run computes and caches runs/<id>/analysis.json, reads it back the next
#     time, and recomputes when the cache's key is not the adapter's sha256;
#   - in the workbench (tmux, 120x40) A on a run shows its spectrum with the numbers of
#     `analyze --json`, the arrow keys step through the modules, e writes a CSV with every
#     value; two selected LoRA runs show the φ grid; a full fine-tune shows its 37 modules.
set -u
SOCK_PREFIX=lbanl
. tests/tui_common.sh

spec() {  # name method r targets extra-lora-json
    cat > "$T/$1.json" <<JSON
{ "name": "$1", "base_model": "$M", "method": "$2",
  "dataset": { "path": "$T/data", "prefix": "summarize: ", "max_source_tokens": 32, "max_target_tokens": 12 },
  "lora": { "r": $3, "alpha": 8, "dropout": 0.0, "targets": $4 $5 },
  "train": { "max_steps": 4, "batch_size": 4, "lr": 0.003, "seed": 7 },
  "eval": { "limit": 2, "max_new_tokens": 4 },
  "threads": 1 }
JSON
}
spec lora-r4-qv lora 4 '["q","v"]' ''
spec lora-r8-all lora 8 '["q","k","v","o","wi_0","wi_1","wo"]' ', "rslora": true'
spec full-ft full 4 '["q"]' ''
for n in lora-r4-qv lora-r8-all full-ft; do
    "$B" train "$T/$n.json" --workspace "$W" > /dev/null 2> "$T/err.$n" || { echo "FAIL train $n:"; cat "$T/err.$n"; }
done

# --- the command on a run: computed once, then read from the cache
"$B" analyze --workspace "$W" --run 1 > "$T/a1" 2> "$T/e1"; rc=$?
check "analyze --run 1 exits 0" '[ $rc -eq 0 ]'
check "first time: computed and cached" 'grep -q "computed and cached in $W/runs/1/analysis.json" "$T/e1"'
check "the table lists 12 q/v modules with rank 4" '[ "$(grep -cE "\.(q|v) +64×64 +4 " "$T/a1")" -eq 12 ]'
"$B" analyze --workspace "$W" --run 1 --json > "$T/j1" 2> "$T/e2"
check "second time: read from the cache" 'grep -q "read from $W/runs/1/analysis.json" "$T/e2"'
"$B" analyze --model "$M" --adapter "$W/runs/1/adapter" --json > "$T/j1d"
check "--run and --adapter give the same JSON" 'cmp -s "$T/j1" "$T/j1d"'
sed -i 's/"key":"[0-9a-f]*"/"key":"0000"/' "$W/runs/1/analysis.json"
"$B" analyze --workspace "$W" --run 1 > /dev/null 2> "$T/e3"
check "a cache of another file is recomputed" 'grep -q "computed and cached" "$T/e3"'
"$B" analyze --workspace "$W" --run 1 --against-run 3 > /dev/null 2> "$T/e4"; rc=$?
check "φ against a full fine-tune is refused with a reason" '[ $rc -ne 0 ] && grep -q "pick two LoRA runs" "$T/e4"'
"$B" analyze --workspace "$W" --run 9 > /dev/null 2> "$T/e5"; rc=$?
check "an unknown run is refused" '[ $rc -ne 0 ] && grep -q "9" "$T/e5"'
# the first singular value of the first module, as the screen prints it (%.4g)
sv1=$(grep -o '"singular_values":\[[^],]*' "$T/j1" | head -n 1 | cut -d[ -f2)
sv1=$(printf '%.4g' "$sv1")

# --- the workbench
tm -f /dev/null new-session -d -s lb -x 120 -y 40 "cd '$PWD' && '$B' --workspace '$W'; echo EXITED; sleep 60"
check "workbench shows the three runs" 'wait_for "3 runs, 0 running" 10'
keys G A  # the last row: run 1
check "A opens the Analysis screen of run 1" 'wait_for "Analysis" 10 && wait_for "#1 lora-r4-qv +LoRA: ΔW = s·B·A" 3'
check "module 1: encoder q, 64×64, effective rank 4" 'wait_for "module 1 of 12 +encoder.block.0.layer.0.SelfAttention.q +64×64" 3 && on_screen "effective rank 4 "'
check "the message line says where the analysis is cached" 'on_screen "computed and cached in $W/runs/1/analysis.json|read from $W/runs/1/analysis.json"'
check "spectrum and energy panels" 'on_screen "σ of ΔW, log scale" && on_screen "energy kept at rank r"'
check "the largest singular value is that of analyze --json ($sv1)" 'on_screen "│ +1 [█▏▎▍▌▋▊▉]+ +$sv1│"'
check "four bars, then the energy at r=4 is 1.000" 'on_screen "│ +4 █" && on_screen "r=4 +█+ +1\.000│" && ! on_screen "│ +5 █"'
cp "$T/screen" "$T/screen_lora"
keys Down
check "Down: module 2, encoder v" 'wait_for "module 2 of 12" 3 && wait_for "encoder.block.0.layer.0.SelfAttention.v" 1'
keys End
check "End: the last module" 'wait_for "module 12 of 12" 3 && wait_for "decoder.block.1.layer.1.EncDecAttention.v" 1'
keys e
check "e exports a CSV and names it" 'wait_for "exported the analysis of 12 modules to .*/exports/analysis-1-" 3'
csv=$(ls "$W"/exports/analysis-1-*.csv 2>/dev/null | head -n 1)
# per module: 4 singular values, norm, rel_norm, effective rank, 7 energies = 14 rows
check "the CSV has every value (1 + 12 × 14 lines)" '[ -n "$csv" ] && [ "$(wc -l < "$csv")" -eq 169 ]'
keys Escape
check "Esc goes back to the runs" 'wait_for "3 runs, 0 running" 5'

# two LoRA runs selected (2, then 1): φ of run 2 against run 1
keys G k Space Space A
check "two LoRA runs: φ grid against #1" 'wait_for "φ\(i, j\) against #1" 10 && wait_for "#2 lora-r8-all" 1'
check "φ grid: 4 rows (min(8, 4)) and the legend" 'on_screen "│ +4 [ ░▒▓█]{8}" && on_screen "same subspace"'
cp "$T/screen" "$T/screen_phi"
keys Down
check "a module #1 does not adapt says so" 'wait_for "SelfAttention.k" 3 && wait_for "#1 does not adapt this module" 1'
keys Escape u g A  # the first row: run 3, the full fine-tune
check "full fine-tune: 37 modules" 'wait_for "#3 full-ft +full fine-tune: ΔW = W_tuned − W_base" 10 && wait_for "module 1 of 37 " 1'
check "full fine-tune: more singular values than rows" 'wait_for "… [0-9]+ more \(e exports all\)" 2'
cp "$T/screen" "$T/screen_full"
keys q
check "q quits" 'wait_for "EXITED" 5'

# quitting while the analysis computes (A then q at once): the workbench exits cleanly, and
# runs/3/analysis.json is either absent or whole (the command then reads it back)
rm -f "$W/runs/3/analysis.json"
tm kill-session -t lb
tm -f /dev/null new-session -d -s lb -x 120 -y 40 "cd '$PWD' && '$B' --workspace '$W'; echo EXITED \$?; sleep 60"
check "workbench again" 'wait_for "3 runs, 0 running" 10'
keys g A q
check "A then q at once: the workbench exits with status 0" 'wait_for "^EXITED 0" 10'
ls "$W"/runs/3/analysis.json.tmp.* > /dev/null 2>&1; tmp_left=$?
check "no temporary analysis file is left" '[ $tmp_left -ne 0 ]'
if [ -e "$W/runs/3/analysis.json" ]; then
    "$B" analyze --workspace "$W" --run 3 > /dev/null 2> "$T/e6"
    check "a cache written before quitting is whole" 'grep -q "read from" "$T/e6"'
fi
if [ -n "${LB_ANALYSIS_CAPTURE:-}" ]; then cp "$T"/screen_lora "$T"/screen_phi "$T"/screen_full "$LB_ANALYSIS_CAPTURE"/; fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
