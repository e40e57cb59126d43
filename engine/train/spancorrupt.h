// T5's span-corruption objective (Raffel et al., "random_spans_noise_mask"): a fraction of
// the tokens, in spans of a given mean length, is replaced in the input by one sentinel per
// span (<extra_id_0>, <extra_id_1>, ...); the target lists each sentinel followed by the
// tokens it hid, then </s>. Used by `lorabench pretrain` to pretrain the bundled model.
#ifndef LB_SPANCORRUPT_H
#define LB_SPANCORRUPT_H

#include <stdint.h>

#include "util.h"

typedef struct {
    double noise_density;      // 0.15 in T5
    double mean_span_length;   // 3 in T5
    const int *sentinels;      // sentinel ids: sentinels[0] is <extra_id_0>
    int n_sentinels;
    int eos_id;
    int whole_target;          // 1: the target is the whole uncorrupted text and </s>
                               // (denoising, as BART: the decoder learns to copy what the
                               // encoder sees); 0: T5's sentinel-and-span target
} span_corrupt_t;

// Corrupts ids[0..n) (without a trailing </s>). *inp / *tgt are malloc'd id arrays ending
// with eos_id; rng is the caller's splitmix64 state. Needs n >= 2; spans beyond the number
// of sentinels are merged into fewer spans. Returns 0, or -1 with err set.
int span_corrupt(const span_corrupt_t *sc, const int *ids, int n, uint64_t *rng, int **inp,
                 int *n_inp, int **tgt, int *n_tgt, lb_err_t *err);

#endif
