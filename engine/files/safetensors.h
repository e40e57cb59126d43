// safetensors: the Hugging Face tensor file format.
// Reading memory-maps the file and validates it as the reference reader does: header
// length within the file and at most 100 MB, a JSON object header, known dtypes, shape
// products and byte sizes consistent and overflow-checked, offsets that tile the data
// with no hole or overlap, nothing after the last tensor.
// Writing pads the header with spaces to a multiple of 8, puts
// {"__metadata__":{"format":"pt"}} first and lays tensors back to back.
#ifndef LB_SAFETENSORS_H
#define LB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define ST_MAX_DIMS 8

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
               ST_U16, ST_U32, ST_U64, ST_F8_E4M3, ST_F8_E5M2 } st_dtype_t;

typedef struct {
    char *name;
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    size_t begin, end;       // byte offsets inside the data section
    const uint8_t *data;     // points into the mapping (possibly unaligned)
} st_tensor_t;

typedef struct {
    char *path;
    uint8_t *map;            // whole file
    size_t size;
    int mapped;              // 1 = mmap, 0 = heap buffer
    int n;
    st_tensor_t *tensors;    // sorted by name
    char *metadata_json;     // the "__metadata__" object as JSON text, or NULL
} st_file_t;

// Opens and validates path. On error, err names the file and the problem.
int st_open(st_file_t *f, const char *path, lb_err_t *err);

// Validates a file already in memory (used by st_open and by the fuzzer). The buffer is
// borrowed: it must outlive f. name is used in messages.
int st_parse(st_file_t *f, const uint8_t *buf, size_t size, const char *name, lb_err_t *err);

void st_close(st_file_t *f);

// The tensor of that name, or NULL.
const st_tensor_t *st_find(const st_file_t *f, const char *name);

const char *st_dtype_name(st_dtype_t d);

// Converts a floating tensor (F32, F16, BF16, F64) to fp32 in dst (numel floats).
int st_to_f32(const st_tensor_t *t, float *dst, lb_err_t *err);

// Finds name, checks its shape equals shape[0..ndim), and converts it into dst.
// The error names the file, the tensor and the expected shape.
int st_load_f32(const st_file_t *f, const char *name, int ndim, const int64_t *shape,
                float *dst, lb_err_t *err);

// The same into bf16 values: a BF16 tensor is copied, another floating one converted to
// fp32 and rounded (nearest, ties to even), a block at a time.
int st_load_bf16(const st_file_t *f, const char *name, int ndim, const int64_t *shape,
                 uint16_t *dst, lb_err_t *err);

// One tensor to write: fp32 values (data), or bf16 ones (data16, with data NULL), which
// are written as a BF16 tensor whatever dtype the writer is given.
typedef struct {
    const char *name;
    const float *data;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const uint16_t *data16;
} st_out_t;

// Writes n tensors to path atomically (temp file, fsync, rename), streamed: no copy of the
// file is assembled in memory. metadata_json is an extra JSON object of string values
// merged into __metadata__ (NULL for none).
int st_write(const char *path, const st_out_t *tensors, int n, const char *metadata_json,
             lb_err_t *err);

// The same, storing every tensor as dtype (ST_F32, or ST_BF16 rounded to nearest even,
// which halves the file).
int st_write_dtype(const char *path, const st_out_t *tensors, int n, const char *metadata_json,
                   st_dtype_t dtype, lb_err_t *err);

#endif
