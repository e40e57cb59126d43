#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull

static const struct {
    const char *name;
    st_dtype_t dtype;
    int bits;
} dtypes[] = {
    {"F32", ST_F32, 32},   {"F16", ST_F16, 16},   {"BF16", ST_BF16, 16}, {"F64", ST_F64, 64},
    {"I64", ST_I64, 64},   {"I32", ST_I32, 32},   {"I16", ST_I16, 16},   {"I8", ST_I8, 8},
    {"U8", ST_U8, 8},      {"BOOL", ST_BOOL, 8},  {"U16", ST_U16, 16},   {"U32", ST_U32, 32},
    {"U64", ST_U64, 64},   {"F8_E4M3", ST_F8_E4M3, 8}, {"F8_E5M2", ST_F8_E5M2, 8},
};

const char *st_dtype_name(st_dtype_t d) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == d) return dtypes[i].name;
    return "?";
}

static int dtype_bits(st_dtype_t d) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == d) return dtypes[i].bits;
    return 0;
}

static int cmp_begin(const void *a, const void *b) {
    const st_tensor_t *x = *(const st_tensor_t *const *)a, *y = *(const st_tensor_t *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor_t *)a)->name, ((const st_tensor_t *)b)->name);
}

static void free_tensors(st_file_t *f) {
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    f->tensors = NULL;
    f->n = 0;
    free(f->metadata_json);
    f->metadata_json = NULL;
}

// Reads a non-negative integer that fits exactly in a double's integer range.
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return -1;
    *out = (uint64_t)d;
    return 0;
}

int st_parse(st_file_t *f, const uint8_t *buf, size_t size, const char *name, lb_err_t *err) {
    memset(f, 0, sizeof *f);
    f->map = (uint8_t *)buf;
    f->size = size;
    if (size < 8)
        return lb_err_set(err, LB_EFORMAT, "%s: not a safetensors file (only %zu bytes; a header needs 8); the file is truncated",
                          name, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > ST_MAX_HEADER)
        return lb_err_set(err, LB_EFORMAT, "%s: header length %llu is over the 100 MB limit; the file is not safetensors or is corrupt",
                          name, (unsigned long long)hlen);
    if (hlen > size - 8)
        return lb_err_set(err, LB_EFORMAT, "%s: header length %llu runs past the end of the %zu-byte file; the file is truncated",
                          name, (unsigned long long)hlen, size);
    if (hlen == 0 || buf[8] != '{')
        return lb_err_set(err, LB_EFORMAT, "%s: header does not start with '{'; the file is not safetensors", name);
    const uint8_t *data = buf + 8 + hlen;
    size_t data_len = size - 8 - (size_t)hlen;

    cJSON *root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lb_err_set(err, LB_EFORMAT, "%s: header is not a JSON object; the file is corrupt", name);
    }
    int count = 0;
    for (cJSON *it = root->child; it; it = it->next) count++;
    f->tensors = xcalloc((size_t)count + 1, sizeof(st_tensor_t));
    const char *bad = NULL;
    char why[256] = "";
    for (cJSON *it = root->child; it; it = it->next) {
        if (!it->string) continue;
        if (!strcmp(it->string, "__metadata__")) {
            if (!cJSON_IsObject(it)) { bad = it->string; snprintf(why, sizeof why, "must be an object of strings"); break; }
            for (cJSON *m = it->child; m; m = m->next)
                if (!cJSON_IsString(m)) { bad = it->string; snprintf(why, sizeof why, "value of \"%s\" must be a string", m->string ? m->string : ""); break; }
            if (bad) break;
            free(f->metadata_json);  // a repeated key: the last one wins, as in JSON readers
            f->metadata_json = cJSON_PrintUnformatted(it);
            continue;
        }
        st_tensor_t *t = &f->tensors[f->n];
        t->name = xstrdup(it->string);
        f->n++;
        if (!cJSON_IsObject(it)) { bad = t->name; snprintf(why, sizeof why, "entry is not an object"); break; }
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt)) { bad = t->name; snprintf(why, sizeof why, "missing string \"dtype\""); break; }
        int found = 0;
        for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
            if (!strcmp(dtypes[i].name, dt->valuestring)) { t->dtype = dtypes[i].dtype; found = 1; }
        if (!found) { bad = t->name; snprintf(why, sizeof why, "unknown dtype \"%.40s\"", dt->valuestring); break; }
        if (!cJSON_IsArray(sh)) { bad = t->name; snprintf(why, sizeof why, "missing array \"shape\""); break; }
        int nd = cJSON_GetArraySize(sh);
        if (nd > ST_MAX_DIMS) { bad = t->name; snprintf(why, sizeof why, "%d dimensions (at most %d supported)", nd, ST_MAX_DIMS); break; }
        t->ndim = nd;
        uint64_t numel = 1;
        int k = 0, overflow = 0;
        for (cJSON *d = sh->child; d; d = d->next, k++) {
            uint64_t v;
            if (json_uint(d, &v)) { overflow = -1; break; }
            t->shape[k] = (int64_t)v;
            if (v && numel > UINT64_MAX / v) overflow = 1;
            numel *= v;
        }
        if (overflow < 0) { bad = t->name; snprintf(why, sizeof why, "shape has a value that is not a non-negative integer"); break; }
        int bits = dtype_bits(t->dtype);
        if (overflow || numel > UINT64_MAX / (uint64_t)bits) { bad = t->name; snprintf(why, sizeof why, "shape product overflows"); break; }
        uint64_t nbytes = numel * (uint64_t)bits / 8;
        if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2) { bad = t->name; snprintf(why, sizeof why, "missing \"data_offsets\" [begin, end]"); break; }
        uint64_t b, e;
        if (json_uint(off->child, &b) || json_uint(off->child->next, &e)) { bad = t->name; snprintf(why, sizeof why, "data_offsets are not non-negative integers"); break; }
        if (e < b) { bad = t->name; snprintf(why, sizeof why, "data_offsets end %llu is before begin %llu", (unsigned long long)e, (unsigned long long)b); break; }
        if (e - b != nbytes) {
            bad = t->name;
            snprintf(why, sizeof why, "shape and dtype need %llu bytes but data_offsets span %llu", (unsigned long long)nbytes, (unsigned long long)(e - b));
            break;
        }
        t->numel = (size_t)numel;
        t->begin = (size_t)b;
        t->end = (size_t)e;
    }
    char bad_name[128];
    if (bad) snprintf(bad_name, sizeof bad_name, "%s", bad);  // bad may point into root
    cJSON_Delete(root);
    if (bad) {
        lb_err_set(err, LB_EFORMAT, "%s: tensor \"%s\": %s; the file is corrupt or not safetensors", name, bad_name, why);
        free_tensors(f);
        return -1;
    }
    // Duplicate names and offsets that must tile the data section exactly.
    qsort(f->tensors, (size_t)f->n, sizeof(st_tensor_t), cmp_name);
    for (int i = 1; i < f->n; i++)
        if (!strcmp(f->tensors[i].name, f->tensors[i - 1].name)) {
            lb_err_set(err, LB_EFORMAT, "%s: tensor \"%s\" appears twice in the header; the file is corrupt", name, f->tensors[i].name);
            free_tensors(f);
            return -1;
        }
    st_tensor_t **order = xmalloc(sizeof(st_tensor_t *) * ((size_t)f->n + 1));
    for (int i = 0; i < f->n; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n, sizeof *order, cmp_begin);
    size_t pos = 0;
    for (int i = 0; i < f->n; i++) {
        if (order[i]->begin != pos) {
            lb_err_set(err, LB_EFORMAT, "%s: tensor \"%s\" starts at byte %zu but the previous tensor ends at %zu (%s); the file is corrupt",
                       name, order[i]->name, order[i]->begin, pos, order[i]->begin > pos ? "a gap" : "an overlap");
            free(order);
            free_tensors(f);
            return -1;
        }
        pos = order[i]->end;
    }
    free(order);
    if (pos != data_len) {
        lb_err_set(err, LB_EFORMAT, "%s: the tensors cover %zu bytes of data but the file holds %zu; the file is %s",
                   name, pos, data_len, pos > data_len ? "truncated" : "corrupt (bytes after the last tensor)");
        free_tensors(f);
        return -1;
    }
    for (int i = 0; i < f->n; i++) f->tensors[i].data = data + f->tensors[i].begin;
    return 0;
}

int st_open(st_file_t *f, const char *path, lb_err_t *err) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return lb_err_set(err, LB_EIO, "cannot open %s: %s; check the path", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lb_err_set(err, LB_EIO, "%s is not a regular file; give the path of a .safetensors file", path);
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return lb_err_set(err, LB_EIO, "cannot map %s: %s", path, strerror(errno));
        }
    }
    close(fd);
    if (st_parse(f, map ? map : (const uint8_t *)"", size, path, err) != 0) {
        if (map) munmap(map, size);
        memset(f, 0, sizeof *f);
        return -1;
    }
    f->map = map;
    f->mapped = map != NULL;
    f->path = xstrdup(path);
    return 0;
}

void st_close(st_file_t *f) {
    if (!f) return;
    free_tensors(f);
    if (f->mapped && f->map) munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor_t *st_find(const st_file_t *f, const char *name) {
    st_tensor_t key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n, sizeof(st_tensor_t), cmp_name);
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

int st_to_f32(const st_tensor_t *t, float *dst, lb_err_t *err) {
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, p, t->numel * 4);  // memcpy: the data may be unaligned
        return 0;
    case ST_F16:
        for (size_t i = 0; i < t->numel; i++) dst[i] = half_to_float((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        return 0;
    case ST_BF16:
        for (size_t i = 0; i < t->numel; i++) {
            uint32_t bits = (uint32_t)(p[2 * i] | (p[2 * i + 1] << 8)) << 16;
            memcpy(&dst[i], &bits, 4);
        }
        return 0;
    case ST_F64:
        for (size_t i = 0; i < t->numel; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default:
        return lb_err_set(err, LB_EFORMAT, "tensor \"%s\" has dtype %s; only F32, F16, BF16 and F64 can be read as weights",
                          t->name, st_dtype_name(t->dtype));
    }
}

static void shape_str(char *out, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(out + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

// The tensor name of f with shape[0..ndim), or NULL with err naming the file, the tensor
// and the expected shape.
static const st_tensor_t *find_shaped(const st_file_t *f, const char *name, int ndim, const int64_t *shape,
                                      lb_err_t *err) {
    const st_tensor_t *t = st_find(f, name);
    char want[128], got[128];
    shape_str(want, sizeof want, ndim, shape);
    if (!t) {
        lb_err_set(err, LB_ESHAPE, "%s: tensor \"%s\" %s is missing; the checkpoint does not match its config.json",
                   f->path ? f->path : "safetensors", name, want);
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        shape_str(got, sizeof got, t->ndim, t->shape);
        lb_err_set(err, LB_ESHAPE, "%s: tensor \"%s\" has shape %s but %s was expected; the file does not match the model's config.json",
                   f->path ? f->path : "safetensors", name, got, want);
        return NULL;
    }
    return t;
}

// st_to_f32 of t, or of values [k0, k0 + n) of it, with its error prefixed by f's path.
static int to_f32_named(const st_file_t *f, const st_tensor_t *t, size_t k0, size_t n, float *dst, lb_err_t *err) {
    st_tensor_t part = *t;
    size_t esz = t->numel ? (t->end - t->begin) / t->numel : 0;
    part.data = t->data + k0 * esz;
    part.numel = n;
    if (st_to_f32(&part, dst, err) != 0) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return lb_err_set(err, LB_EFORMAT, "%s: %s", f->path ? f->path : "safetensors", msg);
    }
    return 0;
}

int st_load_f32(const st_file_t *f, const char *name, int ndim, const int64_t *shape, float *dst, lb_err_t *err) {
    const st_tensor_t *t = find_shaped(f, name, ndim, shape, err);
    return t ? to_f32_named(f, t, 0, t->numel, dst, err) : -1;
}

int st_load_bf16(const st_file_t *f, const char *name, int ndim, const int64_t *shape, uint16_t *dst,
                 lb_err_t *err) {
    const st_tensor_t *t = find_shaped(f, name, ndim, shape, err);
    if (!t) return -1;
    if (t->dtype == ST_BF16) {
        for (size_t i = 0; i < t->numel; i++) dst[i] = (uint16_t)(t->data[2 * i] | (t->data[2 * i + 1] << 8));
        return 0;
    }
    enum { BLOCK = 1 << 16 };
    float *blk = xmalloc(sizeof(float) * BLOCK);
    int rc = 0;
    for (size_t k0 = 0; !rc && k0 < t->numel; k0 += BLOCK) {
        size_t n = t->numel - k0 < BLOCK ? t->numel - k0 : BLOCK;
        rc = to_f32_named(f, t, k0, n, blk, err);
        for (size_t k = 0; !rc && k < n; k++) dst[k0 + k] = lb_f32_to_bf16(blk[k]);
    }
    free(blk);
    return rc;
}

typedef struct {
    char *s;
    size_t n, cap;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 256;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_str(sbuf_t *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(sbuf_t *b, const char *s) {
    cJSON *j = cJSON_CreateString(s);
    char *t = cJSON_PrintUnformatted(j);
    sb_str(b, t);
    cJSON_free(t);
    cJSON_Delete(j);
}

int st_write(const char *path, const st_out_t *ts, int n, const char *metadata_json, lb_err_t *err) {
    return st_write_dtype(path, ts, n, metadata_json, ST_F32, err);
}

int st_write_dtype(const char *path, const st_out_t *ts, int n, const char *metadata_json, st_dtype_t dtype,
                   lb_err_t *err) {
    if (dtype != ST_F32 && dtype != ST_BF16)
        return lb_err_set(err, LB_EARG, "writing %s: only F32 and BF16 tensors can be written", path);
    size_t esz = dtype == ST_BF16 ? 2 : 4;
    sbuf_t h = {0};
    sb_str(&h, "{\"__metadata__\":{\"format\":\"pt\"");
    if (metadata_json) {
        cJSON *m = cJSON_Parse(metadata_json);
        if (!cJSON_IsObject(m)) {
            cJSON_Delete(m);
            free(h.s);
            return lb_err_set(err, LB_EARG, "metadata for %s is not a JSON object", path);
        }
        for (cJSON *it = m->child; it; it = it->next) {
            if (!it->string || !strcmp(it->string, "format")) continue;
            sb_str(&h, ",");
            sb_json_string(&h, it->string);
            sb_str(&h, ":");
            if (cJSON_IsString(it)) {
                sb_json_string(&h, it->valuestring);
            } else {
                char *v = cJSON_PrintUnformatted(it);
                sb_json_string(&h, v);
                cJSON_free(v);
            }
        }
        cJSON_Delete(m);
    }
    sb_str(&h, "}");
    size_t off = 0;
    char num[64];
    for (int i = 0; i < n; i++) {
        size_t numel = 1, tsz = ts[i].data16 ? 2 : esz;
        for (int d = 0; d < ts[i].ndim; d++) numel *= (size_t)ts[i].shape[d];
        sb_str(&h, ",");
        sb_json_string(&h, ts[i].name);
        sb_str(&h, tsz == 2 ? ":{\"dtype\":\"BF16\",\"shape\":[" : ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < ts[i].ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)ts[i].shape[d]);
            sb_str(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + numel * tsz);
        sb_str(&h, num);
        off += numel * tsz;
    }
    sb_str(&h, "}");
    while (h.n % 8) sb_str(&h, " ");
    uint8_t hl[8];
    for (int i = 0; i < 8; i++) hl[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    lb_afile_t *af = lb_afile_open(path, err);
    int rc = !af || lb_afile_write(af, hl, 8, err) || lb_afile_write(af, h.s, h.n, err) ? -1 : 0;
    free(h.s);
    // the values (little endian, as this machine stores them), fp32 rounded to bf16 a block
    // at a time
    enum { BLOCK = 1 << 16 };
    uint16_t *blk = rc || esz == 4 ? NULL : xmalloc(sizeof(uint16_t) * BLOCK);
    for (int i = 0; !rc && i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < ts[i].ndim; d++) numel *= (size_t)ts[i].shape[d];
        if (ts[i].data16) {
            rc = lb_afile_write(af, ts[i].data16, numel * 2, err);
        } else if (esz == 4) {
            rc = lb_afile_write(af, ts[i].data, numel * 4, err);
        } else {
            for (size_t k0 = 0; !rc && k0 < numel; k0 += BLOCK) {
                size_t kn = numel - k0 < BLOCK ? numel - k0 : BLOCK;
                for (size_t k = 0; k < kn; k++) blk[k] = lb_f32_to_bf16(ts[i].data[k0 + k]);
                rc = lb_afile_write(af, blk, kn * 2, err);
            }
        }
    }
    free(blk);
    // a failed write has dropped the file already
    return rc ? -1 : lb_afile_commit(af, err);
}
