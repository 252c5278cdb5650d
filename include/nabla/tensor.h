/* nabla core types: status codes, dtypes, shapes, half-precision conversion,
 * and the seeded random number generator. Nothing here knows about graphs. */
#ifndef NABLA_TENSOR_H
#define NABLA_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Maximum rank of any tensor. */
#define NB_MAX_DIMS 8

/* ---- status ------------------------------------------------------------ */

/* Every fallible call returns an nb_status. NB_OK is zero so that
 * `if (st) ...` tests for failure. The human-readable message of the most
 * recent failure on the calling thread is returned by nb_last_error(). */
typedef enum nb_status {
  NB_OK = 0,
  NB_ERR_INVALID_ARG, /* NULL pointer, bad enum value, out-of-range option */
  NB_ERR_SHAPE,       /* shapes do not fit the op */
  NB_ERR_DTYPE,       /* dtype not supported by the op or the backend */
  NB_ERR_OOM,         /* host or device allocation failed */
  NB_ERR_IO,          /* file could not be opened, read or written */
  NB_ERR_FORMAT,      /* a file or buffer is corrupt or truncated */
  NB_ERR_UNSUPPORTED, /* valid request that this build cannot do */
  NB_ERR_STATE,       /* call made in the wrong order (e.g. run before compile) */
  NB_ERR_INTERNAL,    /* a bug in nabla: please report it */
} nb_status;

/* Short name of a status code ("shape error", ...). Never NULL. */
const char *nb_status_name(nb_status st);

/* Message of the last error recorded on this thread ("" if none). The
 * buffer is thread-local and valid until the next nabla call that fails on
 * this thread. This is the only process-wide mutable state besides the CPU
 * thread count (see backend.h). */
const char *nb_last_error(void);

/* Records an error message for this thread and returns `st`. Library code and
 * user extensions use it to build errors: return nb_error(NB_ERR_SHAPE, ...). */
nb_status nb_error(nb_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clears this thread's error message. */
void nb_clear_error(void);

/* ---- dtypes -------------------------------------------------------------- */

typedef enum nb_dtype {
  NB_F32 = 0,
  NB_F16,
  NB_BF16,
  NB_I32,
  NB_I64,
  NB_U8,
  NB_DTYPE_COUNT
} nb_dtype;

/* Bytes per element; 0 for an invalid dtype. */
size_t nb_dtype_size(nb_dtype dt);
/* "f32", "f16", ...; "invalid" for out-of-range values. */
const char *nb_dtype_name(nb_dtype dt);
/* Parses "f32", "float32", "bf16", ...; NB_ERR_INVALID_ARG if unknown. */
nb_status nb_dtype_parse(const char *name, nb_dtype *out);
/* 1 if `dt` is one of the enum values above. */
int nb_dtype_valid(int dt);
/* 1 for f32/f16/bf16. */
int nb_dtype_is_float(nb_dtype dt);

/* IEEE half and bfloat16 conversions, round-to-nearest-even, with NaN/Inf
 * preserved and subnormals handled. */
uint16_t nb_f32_to_f16(float x);
float nb_f16_to_f32(uint16_t h);
uint16_t nb_f32_to_bf16(float x);
float nb_bf16_to_f32(uint16_t h);

/* Converts `n` elements between any two dtypes (float<->int truncates toward
 * zero like a C cast; out-of-range float->int saturates). */
nb_status nb_convert(const void *src, nb_dtype src_dt, void *dst, nb_dtype dst_dt, size_t n);

/* ---- shapes -------------------------------------------------------------- */

/* Number of elements of a shape (1 for rank 0). */
int64_t nb_shape_numel(int ndim, const int64_t *shape);
/* Writes "[2, 3, 4]" into buf (always NUL-terminated) and returns buf. */
char *nb_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);

/* ---- random numbers ------------------------------------------------------ */

/* A small, fast, seedable generator (xoshiro256**). Its full state is this
 * struct, so it can be checkpointed and restored bit for bit. */
typedef struct nb_rng {
  uint64_t s[4];
} nb_rng;

void nb_rng_seed(nb_rng *r, uint64_t seed);
uint64_t nb_rng_next(nb_rng *r);
/* Uniform in [0, 1). */
double nb_rng_uniform(nb_rng *r);
/* Standard normal (Box-Muller). */
double nb_rng_normal(nb_rng *r);
/* Fills `n` floats with U(lo, hi) or N(mean, std). */
void nb_rng_fill_uniform(nb_rng *r, float *dst, size_t n, float lo, float hi);
void nb_rng_fill_normal(nb_rng *r, float *dst, size_t n, float mean, float std);

/* Counter-based hash for per-element randomness (dropout masks): the same
 * (seed, counter) always gives the same value, in any thread order.
 * Returns a uniform float in [0, 1). */
float nb_hash_uniform(uint64_t seed, uint64_t counter);

#ifdef __cplusplus
}
#endif

#endif
