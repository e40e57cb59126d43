// spm: reads a SentencePiece model (the ModelProto protobuf written by spm_train, e.g. a
// T5 "spiece.model") and converts it to a Hugging Face tokenizer.json the way
// transformers' T5 converter does: Unigram model with the pieces and scores, then
// <extra_id_N-1> .. <extra_id_0> sentinels; normalizer Sequence[Precompiled(charsmap),
// Replace(" {2,}", " ")]; Metaspace pre-tokenizer and decoder (prepend "always" when the
// model adds a dummy prefix); a template that appends </s>. The protobuf wire format is
// parsed here directly, so no protobuf library is needed.
#ifndef LB_SPM_H
#define LB_SPM_H

#include <stddef.h>

#include "util.h"

// SentencePiece piece types (ModelProto.SentencePiece.Type).
enum { SPM_NORMAL = 1, SPM_UNKNOWN = 2, SPM_CONTROL = 3, SPM_USER_DEFINED = 4,
       SPM_UNUSED = 5, SPM_BYTE = 6 };

typedef struct {
    char *piece;  // UTF-8, with U+2581 for spaces
    float score;  // log probability for Unigram
    int type;     // SPM_*
} spm_piece_t;

typedef struct {
    spm_piece_t *pieces;
    int n_pieces;
    // trainer_spec
    int model_type;      // 1 Unigram, 2 BPE, 3 word, 4 char
    int unk_id, bos_id, eos_id, pad_id;
    int byte_fallback;
    // normalizer_spec
    char *normalizer_name;          // e.g. "nmt_nfkc"; "" when absent
    unsigned char *charsmap;        // precompiled_charsmap bytes (may be NULL)
    size_t charsmap_len;
    int add_dummy_prefix;           // default true
    int remove_extra_whitespaces;   // default true
    int escape_whitespaces;         // default true
} spm_model_t;

// Parses a serialized ModelProto. Unknown fields are skipped, as protobuf does. Returns 0,
// or -1 with err naming the field that is malformed (name is the file, for messages).
int spm_parse_model(const void *data, size_t len, const char *name, spm_model_t *m,
                    lb_err_t *err);

// Reads and parses a .model file.
int spm_load_model(const char *path, spm_model_t *m, lb_err_t *err);

// Frees what spm_parse_model allocated and zeroes m.
void spm_model_free(spm_model_t *m);

// The tokenizer.json text (pretty-printed with two-space indents, as the tokenizers
// library saves it) for a Unigram model with n_extra_ids sentinels (T5 uses 100). Control
// and unknown pieces become special added tokens, user-defined pieces non-special ones.
// As in transformers, byte_fallback is written false (the T5 converter does not carry it).
// Returns a new NUL-terminated string (*len its length), or NULL with err set when the
// model is not Unigram or has no </s> piece.
char *spm_to_tokenizer_json(const spm_model_t *m, int n_extra_ids, size_t *len,
                            lb_err_t *err);

// Loads spm_path, converts it and writes json_path atomically.
int spm_convert_file(const char *spm_path, const char *json_path, int n_extra_ids,
                     lb_err_t *err);

#endif
