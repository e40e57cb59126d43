// FUZZ_CHECK(cond): an invariant of a fuzz target. Under libFuzzer a failed check prints
// the condition and aborts, so the input is saved as a crash; tests/test_fuzz_regressions.c
// includes the targets with FUZZ_CHECK defined as the harness's EXPECT, so the same checks
// run as assertions on the saved inputs.
#ifndef LB_FUZZ_CHECK_H
#define LB_FUZZ_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef FUZZ_CHECK
#define FUZZ_CHECK(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)
#endif

#endif
