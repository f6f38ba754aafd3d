/*
 * rt.h: the kiln runtime's public header.
 *
 * The runtime is the only code linked into programs that kiln builds, so it
 * depends on libc, libm and pthreads alone, and every symbol it exports
 * carries the rt_ prefix.  The compiler itself links it too, for tensor files
 * (.npy, safetensors), so the compiler and the programs it builds read and
 * write exactly the same formats.
 *
 * Error convention: functions that can fail for reasons outside the
 * program's control (a missing file, a malformed header) return an RtStatus
 * and write one human-readable sentence into the caller's `err` buffer,
 * starting with the file name ("a.npy: not a .npy file (bad magic string)").
 * They never print and never exit; callers decide what to do.
 */
#ifndef KILN_RT_H
#define KILN_RT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define RT_MAX_RANK 8

typedef enum RtDType { RT_F32 = 0, RT_I32 = 1 } RtDType;

typedef enum RtStatus {
  RT_OK = 0,
  RT_ERR_IO,     /* cannot open, read, write or rename a file */
  RT_ERR_FORMAT, /* the file is not what it claims to be */
  RT_ERR_DTYPE,  /* a dtype the caller cannot use */
  RT_ERR_SHAPE,  /* a shape the caller cannot use */
  RT_ERR_ALLOC,  /* out of memory */
  RT_ERR_NOTFOUND,
} RtStatus;

/* A dense, row-major (C order) tensor.  `data` is owned by whoever filled
 * the struct; the loaders below allocate it with malloc. */
typedef struct RtTensor {
  RtDType dtype;
  int rank;                 /* 0 for a scalar */
  int64_t dim[RT_MAX_RANK]; /* dim[0..rank) */
  void *data;
} RtTensor;

const char *rt_status_str(RtStatus s);
const char *rt_dtype_name(RtDType t); /* "f32", "i32" */
size_t rt_dtype_size(RtDType t);
/* The element count: 1 for a scalar; -1 for an invalid tensor (NULL, a
 * rank outside 0..RT_MAX_RANK, a negative dim, or a count that overflows
 * int64_t); 0 when a dim is 0 and none is negative (even if the other dims'
 * product would overflow). */
int64_t rt_numel(const RtTensor *t);
/* The data size in bytes; 0 for an invalid tensor (rt_numel < 0, an
 * unknown dtype, or a size that does not fit in size_t) as well as for an
 * empty one, so check rt_numel to tell them apart. */
size_t rt_nbytes(const RtTensor *t);
/* Formats "f32[2, 3]" into buf (always NUL-terminated); returns buf. */
char *rt_tensor_type_str(const RtTensor *t, char *buf, size_t n);
/* Prints "NAME: f32[2, 3]  min ..  max ..  mean .." (NaNs left out and
 * counted) and a line with the first 8 values to f: what `kiln run` and a
 * built program print for an output given no --output file. */
void rt_tensor_summary(FILE *f, const char *name, const RtTensor *t);

/* ---- npy.c: NumPy .npy files (format versions 1.0, 2.0 and 3.0) ----
 * Reading accepts little-endian '<f4', '<i4' natively and converts '<f8' to
 * f32, and '<i8', '<i2', '|i1', '|u1', '|b1' to i32 (an i64 value outside
 * the i32 range is an error).  Fortran-order and big-endian arrays, object
 * arrays and structured dtypes are rejected with a clear message.
 * Writing produces version 1.0, '<f4' or '<i4', C order; it writes to a
 * temporary file in the same directory and renames it over `path`, so a
 * reader never sees a partial file and a failure leaves no file behind. */
RtStatus rt_npy_parse(const void *buf, size_t len, const char *name,
                      RtTensor *out, char *err, size_t errlen);
RtStatus rt_npy_read(const char *path, RtTensor *out, char *err, size_t errlen);
RtStatus rt_npy_write(const char *path, const RtTensor *t, char *err, size_t errlen);

/* ---- safetensors.c: the safetensors format (used for parameters) ----
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data.  Reading accepts F32 and I32
 * natively and converts F64, F16, BF16 to f32 and I64 (range-checked) to
 * i32; it validates every offset, size and overlap and rejects duplicate
 * names.  Writing sorts tensors by name, pads the header with spaces to a
 * multiple of 8 bytes, and is atomic like rt_npy_write. */
typedef struct RtNamedTensor {
  char *name;
  RtTensor t;
} RtNamedTensor;

typedef struct RtTensorFile {
  int n;
  RtNamedTensor *items; /* sorted by name when read */
  int n_meta;
  char **meta_keys, **meta_values; /* the "__metadata__" string map */
} RtTensorFile;

RtStatus rt_safetensors_parse(const void *buf, size_t len, const char *name,
                              RtTensorFile *out, char *err, size_t errlen);
RtStatus rt_safetensors_read(const char *path, RtTensorFile *out, char *err, size_t errlen);
/* meta may be NULL when n_meta is 0. */
RtStatus rt_safetensors_write(const char *path, const RtNamedTensor *items, int n,
                              const char *const *meta_keys, const char *const *meta_values,
                              int n_meta, char *err, size_t errlen);
/* Binary search by name: f->items must be sorted by strcmp of their
 * names, as rt_safetensors_read and _parse return them; NULL if absent. */
const RtNamedTensor *rt_tensor_file_find(const RtTensorFile *f, const char *name);
void rt_tensor_file_free(RtTensorFile *f); /* frees names, data and metadata */

/* ---- file.c: whole-file reads and atomic writes, shared by the formats ---- */
/* Reads a whole file into a malloc'ed buffer; *len receives its size. */
RtStatus rt_read_file(const char *path, void **data, size_t *len, char *err, size_t errlen);
/* Writes the concatenation of the n pieces to path atomically (temporary
 * file in the same directory, fsync, rename). */
RtStatus rt_write_file_atomic(const char *path, const void *const *pieces, const size_t *sizes,
                              int n, char *err, size_t errlen);

/* --- parameter initialization (rt_init.c) ------------------------------------------ */

/* Counter-based random numbers: pure functions of (seed, counter). */
uint64_t rt_rng_hash(uint64_t seed, uint64_t counter);
double rt_rng_uniform(uint64_t seed, uint64_t counter); /* [0, 1) */
double rt_rng_normal(uint64_t seed, uint64_t counter);  /* N(0, 1) */
uint64_t rt_rng_seed_for(uint64_t seed, const char *name); /* a parameter's stream */

typedef enum RtInitKind {
  RT_INIT_AUTO,     /* he if the layer feeds a ReLU-family activation, else xavier */
  RT_INIT_ZEROS,
  RT_INIT_ONES,
  RT_INIT_CONSTANT, /* a */
  RT_INIT_XAVIER,   /* uniform, bound sqrt(6 / (fan_in + fan_out)) */
  RT_INIT_XAVIER_NORMAL,
  RT_INIT_HE,       /* normal, std sqrt(2 / fan_in) */
  RT_INIT_HE_UNIFORM,
  RT_INIT_NORMAL,   /* mean a, std b */
  RT_INIT_UNIFORM,  /* [a, b) */
} RtInitKind;

/* A parameter's initializer (the compiler's Init is this type). */
typedef struct RtInit {
  RtInitKind kind;
  double a, b;
  int64_t fan_in, fan_out; /* the compiler fills them (graph_resolve_init) */
} RtInit;

const char *rt_init_name(RtInitKind k); /* "he"; "?" if out of range */
int rt_init_lookup(const char *name);   /* the kind, or -1 */
/* Fills cnt values of type dt at data: element i is drawn with counter i
 * from rt_rng_seed_for(seed, name) (f32), or the constant (i32 takes
 * zeros, ones and constant only).  Runs on the thread pool; the values do
 * not depend on the thread count.  RT_OK, or an error for an unresolved
 * kind (auto) or an i32 parameter with a random initializer. */
RtStatus rt_init_fill(const RtInit *in, uint64_t seed, const char *name, RtDType dt, void *data,
                      int64_t cnt, char *err, size_t n);

#endif
