// Hugging Face tokenizer.json reader for Unigram models (T5 / FLAN-T5), producing exactly the
// ids of the tokenizers library (0.2x):
//   added tokens matched first (non-normalized ones in the raw text, normalized ones in the
//   normalized text; single_word / lstrip / rstrip as the library applies them),
//   normalizers Precompiled (SentencePiece charsmap), NFKC, NFKD, Replace (a string, or a
//   regex of the form "C{n,}" / "C+" / "\s+"), Strip, Prepend, Sequence,
//   pre-tokenizers Metaspace (prepend_scheme always/first/never, split), WhitespaceSplit,
//   Sequence,
//   the Unigram model (Viterbi with the library's tie-breaking, unknown characters scored
//   min_score - 10, consecutive unknowns fused into one unk, byte_fallback),
//   post-processor TemplateProcessing (e.g. "$A </s>"),
//   decoders Metaspace, ByteFallback, Fuse, Strip, Replace (string), Sequence.
// Anything else (BPE/WordPiece models, other normalizers...) is refused at load with a
// message naming it. "truncation" and "padding" are ignored: engine/data truncates.
//
// A loaded tokenizer is immutable; encode/decode may run from several threads at once.
#ifndef LB_TOKENIZER_H
#define LB_TOKENIZER_H

#include <stddef.h>

#include "util.h"

typedef struct tokenizer tokenizer_t;

// Reads a tokenizer.json file. Returns NULL and fills err (naming the file and the field
// or component) when the file is unreadable, malformed or uses something unsupported.
tokenizer_t *tokenizer_load(const char *path, lb_err_t *err);

// Same from JSON text in memory; name is used in error messages (e.g. the file name).
tokenizer_t *tokenizer_load_json(const char *json, size_t len, const char *name, lb_err_t *err);

void tokenizer_free(tokenizer_t *tok);

// Encodes UTF-8 text into *ids (malloc'ed, freed by the caller) and *n. With add_special
// the post-processor's template is applied (T5: "</s>" appended), as tokenizers'
// encode(text, add_special_tokens=True). Returns 0, or -1 with err (invalid UTF-8, or an
// unknown character when the model has no unk_id).
int tokenizer_encode(const tokenizer_t *tok, const char *text, int add_special, int **ids,
                     int *n, lb_err_t *err);

// Same for a text of known length (it may contain NUL bytes).
int tokenizer_encode_n(const tokenizer_t *tok, const char *text, size_t len, int add_special,
                       int **ids, int *n, lb_err_t *err);

// Decodes ids to a malloc'ed UTF-8 string, as tokenizers' decode(ids, skip_special_tokens):
// ids that are neither added tokens nor in the vocabulary are dropped; with skip_special the
// special added tokens (<pad>, </s>, <unk>, <extra_id_N>...) are dropped before the decoder
// runs. Never NULL.
char *tokenizer_decode(const tokenizer_t *tok, const int *ids, int n, int skip_special);

// Number of ids the model can produce: max(model vocabulary, highest added-token id + 1).
// This is the embedding size a model needs at least.
int tokenizer_vocab_size(const tokenizer_t *tok);

// The token string of an id (added tokens first, then the model's piece), or NULL.
const char *tokenizer_id_to_piece(const tokenizer_t *tok, int id);

// The id of a token string (added tokens first, then the model's pieces), or -1.
int tokenizer_piece_to_id(const tokenizer_t *tok, const char *piece);

// Ids of "</s>", "<pad>" and the model's unk token, or -1 when absent.
int tokenizer_eos_id(const tokenizer_t *tok);
int tokenizer_pad_id(const tokenizer_t *tok);
int tokenizer_unk_id(const tokenizer_t *tok);

// 1 when id is a special added token (skipped by decode with skip_special), else 0.
int tokenizer_is_special(const tokenizer_t *tok, int id);

#endif
