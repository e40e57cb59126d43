// Generation with a T5: greedy and beam search with the semantics of transformers'
// generate() (5.x: _sample without sampling, and the vectorised _beam_search), so that the
// ids match Hugging Face's token for token.
//
// The encoder runs once per input; each decoder layer's cross-attention keys and values are
// computed once per input; self-attention keys and values are cached step by step, so a step
// costs one token per row, not the whole prefix; beams are rows of the same products. A
// step's weight products (a few rows each, memory-bound) run on the decoder's own pool, cut
// by output features, each weight read once (an AVX-512 kernel; bf16-held weights read as
// bf16), or through linear_forward_pool where the model is packed for bf16 products; a LoRA
// adapter attached to the model (lora_attach) is applied either way.
//
// Dimensions as in t5.h; here also R decoder rows (B·num_beams), P cached positions.
#ifndef LB_GENERATE_H
#define LB_GENERATE_H

#include <stdint.h>

#include "t5.h"
#include "util.h"

// transformers' early_stopping: True stops a batch item as soon as num_beams hypotheses are
// finished; False (heuristic) and "never" keep going while a running beam could still beat
// the worst finished one (they differ only for length_penalty > 0).
enum { GENERATE_EARLY_HEURISTIC = 0, GENERATE_EARLY_TRUE = 1, GENERATE_EARLY_NEVER = 2 };

typedef struct {
    int num_beams;             // 1 = greedy
    int max_new_tokens;        // tokens after the decoder start token, </s> included
    float length_penalty;      // finished beam score = Σ log p / (generated tokens)^penalty
    int early_stopping;        // GENERATE_EARLY_*
    int no_repeat_ngram_size;  // 0 = off; else no n-gram occurs twice in a row's ids
    int min_new_tokens;        // </s> is banned (-inf) until this many tokens are generated,
                               // as transformers' MinNewTokensLengthLogitsProcessor; 0 = off;
                               // = max_new_tokens fixes the length (the bench)
    int use_cache;             // 1 (normal); 0 recomputes the prefix every step through
                               // t5_forward (for checking the cache and for timing)
} generate_opts_t;

// Greedy, 48 new tokens, length penalty 1.0, early_stopping True, no n-gram rule, no minimum
// length, cache on.
void generate_opts_default(generate_opts_t *o);

typedef struct {
    int B, L;          // one row per input, all of the same length L
    int32_t *ids;      // [B, L]: decoder_start first; after </s> the padding transformers
                       // writes (greedy: pad_token_id; beams: pad_token_id, or eos when the
                       // pad id is 0, as its `pad_token_id or eos_token_id` fill does)
    int *n_new;        // [B] generated tokens up to and including the first </s>
    int steps;         // decoder steps run
    double encode_s;   // wall time of the encoder (0 without the cache: it is redone each step)
    double decode_s;   // wall time of the decoding loop
} generate_result_t;

// Generates for B inputs of S tokens each (input_ids [B, S] padded to the longest, with
// attention_mask [B, S], 0 on padding; mask NULL = all tokens). pad, eos and decoder start
// ids come from the model's config. Fills *out (free with generate_result_free).
int generate_batch(const t5_model_t *m, const int32_t *input_ids, const int32_t *attention_mask,
                   int B, int S, const generate_opts_t *o, generate_result_t *out, lb_err_t *err);

void generate_result_free(generate_result_t *r);

// The encoder's output (after its final norm) for a batch: enc_out [B, S, D].
int generate_encode(const t5_model_t *m, const int32_t *input_ids, const int32_t *attention_mask,
                    int B, int S, lb_real *enc_out, lb_err_t *err);

// ---- the incremental decoder ------------------------------------------------------------
// Rows r = b·rows_per_input + j all read the encoder output of input b. Each step feeds one
// token per row at the next position and returns the next-token logits of every row.

typedef struct generate_dec generate_dec_t;

// Prepares a decoder for max_len positions: computes the cross-attention keys and values of
// every layer from enc_out [B, S, D] (attention_mask [B, S] or NULL), and sizes the cache.
// Attach LoRA adapters before: their ranks size the scratch.
generate_dec_t *generate_dec_new(const t5_model_t *m, const lb_real *enc_out,
                                 const int32_t *attention_mask, int B, int S, int rows_per_input,
                                 int max_len, lb_err_t *err);

// Feeds tokens [R] at position generate_dec_pos(d); *logits points to the decoder's own
// [R, V] logits (valid until the next step). Fails when the cache is full, a token is outside
// the vocabulary, or an adapter of a larger rank was attached after generate_dec_new.
int generate_dec_step(generate_dec_t *d, const int32_t *tokens, lb_real **logits, lb_err_t *err);

// Positions held in the cache (tokens fed so far).
int generate_dec_pos(const generate_dec_t *d);

void generate_dec_free(generate_dec_t *d);

#endif
