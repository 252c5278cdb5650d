/* Shared test helpers: running small graphs, comparing values, central
 * finite-difference gradient checks, and reading reference values that
 * tests/ref/make_refs.py dumped from PyTorch. Built on cmocka. */
#ifndef NB_TEST_UTIL_H
#define NB_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the headers above first */
#include <cmocka.h>

#include "nabla/nabla.h"

/* Fills n floats with U(lo, hi) from a fixed seed. Caller frees. */
float *tu_rand(size_t n, float lo, float hi, uint64_t seed);

/* Fails the test (with what/index/values) unless |got - want| <= atol +
 * rtol * |want| for every element. NaN matches NaN. */
void tu_assert_close(const char *what, const float *got, const float *want, size_t n, double atol,
                     double rtol);

/* Fails the test with the graph's or thread's error message unless st is OK. */
#define TU_OK(st) tu_check_ok((st), #st, __FILE__, __LINE__)
void tu_check_ok(nb_status st, const char *expr, const char *file, int line);

/* One input of a test graph. data may be NULL: then U(lo, hi) with `seed`.
 * Integer inputs (dtype i64/i32) take their values from idata. */
typedef struct tu_input {
  int ndim;
  int64_t shape[NB_MAX_DIMS];
  const float *data;
  float lo, hi;
  uint64_t seed;
  int requires_grad;
  nb_dtype dtype;
  const int64_t *idata;
} tu_input;

typedef nb_tensor *(*tu_build_fn)(nb_graph *g, nb_tensor **x, void *ctx);

/* Builds, compiles and runs build(inputs) once on the CPU and copies the f32
 * result into a malloc'ed buffer (*out, *numel, shape into out_shape). */
void tu_forward(tu_build_fn build, void *ctx, int n_in, const tu_input *inputs, float **out,
                int64_t *numel, int *ndim, int64_t *out_shape);

/* Checks d(sum(y * R))/dx of y = build(x) for every input with requires_grad
 * against central differences with step eps. R is a fixed random tensor, so
 * every output element's gradient path is exercised. The perturbed losses
 * are summed in double, so the finite differences carry only the f32
 * rounding of y itself (about 1e-7 |y| / eps per element). */
void tu_gradcheck(const char *name, tu_build_fn build, void *ctx, int n_in, const tu_input *inputs,
                  double eps, double atol, double rtol);

/* ---- one compiled graph ------------------------------------------------------ */

/* A graph compiled on a fresh CPU backend and state. */
typedef struct tu_runner {
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
} tu_runner;

/* Compiles g (which must have built without error) with opt (NULL:
 * defaults); fails the test if it cannot. */
void tu_runner_compile(nb_graph *g, const nb_compile_options *opt, tu_runner *r);
/* Feeds f32 data for input `in` (numel floats). */
void tu_runner_feed(tu_runner *r, nb_tensor *in, const float *data);
/* A malloc'ed copy of output t (f32). */
float *tu_runner_fetch(tu_runner *r, nb_tensor *t);
void tu_runner_free(tu_runner *r);

/* conv2d of x [xs] by w [ws] with p, and both its gradient ops for the
 * output gradient dy, in one CPU plan: malloc'ed y, dx and dw. */
void tu_conv_all(const int64_t *xs, const int64_t *ws, const nb_conv2d_params *p, const float *x,
                 const float *w, const float *dy, float **y, float **dx, float **dw);

/* ---- state snapshots --------------------------------------------------------- */

/* A copy of every variable of a state (name, bytes, values), to compare a
 * state before and after a run, or two runs bit for bit. */
typedef struct tu_snapshot {
  int n;
  char **name;
  void **v;
  size_t *bytes;
} tu_snapshot;

/* Copies every variable of st into s; fails the test if it cannot. */
void tu_snapshot_take(const nb_state *st, tu_snapshot *s);
void tu_snapshot_free(tu_snapshot *s);
/* Fails the test (naming the variable and `what`) unless a and b hold the
 * same variables in the same order with identical bytes. */
void tu_snapshot_assert_equal(const tu_snapshot *a, const tu_snapshot *b, const char *what);

/* ---- text ------------------------------------------------------------------------ */

/* The text file `path` as ids of its own character vocabulary (malloc'ed;
 * *n ids, *vocab the vocabulary's size); fails the test if it cannot. */
int32_t *tu_text_tokens(const char *path, int64_t *n, int *vocab);

/* ---- reference files -------------------------------------------------------- */

typedef struct tu_ref tu_ref;
/* Loads tests/ref/<file>; fails the test if it cannot. */
tu_ref *tu_ref_load(const char *file);
void tu_ref_free(tu_ref *r);
/* The array `name` of case `case_name`; fails the test if missing. */
const float *tu_ref_get(const tu_ref *r, const char *case_name, const char *name, int *ndim,
                        int64_t *shape, int64_t *numel);

#endif
