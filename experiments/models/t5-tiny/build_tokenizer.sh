#!/bin/sh
# Trains t5-tiny's SentencePiece Unigram tokenizer on the debsum train split (descriptions
# and synopses; never validation or test) and converts it to tokenizer.json with
# lorabench's own converter (engine/spm.c, as transformers converts T5 tokenizers).
#
#   experiments/models/t5-tiny/build_tokenizer.sh [LORABENCH_BINARY]
#
# Needs spm_train (Debian: apt-get install sentencepiece) and python3 (to read the JSONL).
# The options are T5's: nmt_nfkc normalization, pad 0, eos 1, unk 2, no bos, 100 sentinels
# <extra_id_99> .. <extra_id_0> appended after the 8000 pieces. One thread, so that the
# result does not depend on the machine.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
lorabench=${1:-$root/build/lorabench}
train=$root/experiments/data/debsum/train.jsonl
command -v spm_train >/dev/null || { echo "spm_train not found: apt-get install sentencepiece" >&2; exit 1; }
[ -x "$lorabench" ] || { echo "$lorabench not found: run make first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$train" > "$tmp/corpus.txt" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        r = json.loads(line)
        print(r["description"])
        print(r["synopsis"])
PY
# Relative names: the model records its input and prefix, which must not vary per run.
(cd "$tmp" && spm_train --input=corpus.txt --model_prefix=spiece --model_type=unigram \
  --vocab_size=8000 --normalization_rule_name=nmt_nfkc --character_coverage=0.9995 \
  --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --input_sentence_size=0 \
  --shuffle_input_sentence=false --max_sentence_length=8192 --num_threads=1 \
  > spm_train.log 2>&1) || { tail -20 "$tmp/spm_train.log" >&2; exit 1; }
cp "$tmp/spiece.model" "$here/spiece.model"
"$lorabench" tokenizer-from-spm "$here/spiece.model" "$here/tokenizer.json" --extra-ids 100
