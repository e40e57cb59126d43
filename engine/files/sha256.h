// SHA-256 (FIPS 180-4), for the checksums of stored artifacts.
#ifndef LB_SHA256_H
#define LB_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} sha256_t;

void sha256_init(sha256_t *s);
void sha256_update(sha256_t *s, const void *data, size_t n);
// Writes the digest as 64 lowercase hex digits and a NUL into hex[65].
void sha256_final_hex(sha256_t *s, char hex[65]);

// Digest of a whole file; *bytes (may be NULL) gets its size.
int sha256_file(const char *path, char hex[65], size_t *bytes, lb_err_t *err);

#endif
