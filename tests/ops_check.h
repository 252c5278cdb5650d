/* Shared by the op suites (test_elementwise.c, test_reduce.c, test_matmul.c,
 * test_nn_ops.c): runs a graph built by a tu_build_fn on the inputs stored
 * in tests/ref/ops.txt (written by tests/ref/ops_ref.py) and compares the
 * output and the gradients of sum(y * R) with PyTorch's, then checks the
 * same gradients against finite differences with tu_gradcheck.
 *
 * Header-only with static functions: each suite is its own executable, and
 * tests/CMakeLists.txt builds every tests/test_*.c on its own. */
#ifndef NB_OPS_CHECK_H
#define NB_OPS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define OC_MAX_IN 8

typedef struct oc_case oc_case;

struct oc_case {
  const char *name; /* case in ops.txt */
  /* one char per input x0, x1, ...: 'g' f32 that takes a gradient, 'f' f32
   * without, 'l' i64, 'i' i32 */
  const char *kinds;
  tu_build_fn build;
  void *ctx;
  double atol, rtol; /* output and gradients against PyTorch */
  int grad;          /* compare autograd gradients of sum(y * R) */
  /* finite differences on the stored inputs (0 = skip: kinks, casts) */
  double fd_eps, fd_atol, fd_rtol;
  /* extra checks after the run (state of variables, ...) */
  void (*after)(const oc_case *c, nb_plan *p, nb_state *st);
};

static tu_ref *oc_ref_file;

static const tu_ref *oc_ref(void) {
  if (!oc_ref_file) oc_ref_file = tu_ref_load("ops.txt");
  return oc_ref_file;
}

static const float *oc_get(const oc_case *c, const char *array, int *ndim, int64_t *shape,
                           int64_t *numel) {
  return tu_ref_get(oc_ref(), c->name, array, ndim, shape, numel);
}

/* Fails unless `t` has exactly the shape of reference array `array`. */
static void oc_assert_shape(const oc_case *c, const char *array, const nb_tensor *t) {
  int nd;
  int64_t shape[NB_MAX_DIMS];
  oc_get(c, array, &nd, shape, NULL);
  int same = nd == nb_tensor_ndim(t);
  for (int d = 0; same && d < nd; d++) same = shape[d] == nb_tensor_shape(t)[d];
  if (!same) {
    char s0[128], s1[128];
    fail_msg("%s: %s has shape %s, PyTorch gives %s", c->name, array,
             nb_shape_str(nb_tensor_ndim(t), nb_tensor_shape(t), s0, sizeof s0),
             nb_shape_str(nd, shape, s1, sizeof s1));
  }
}

typedef struct {
  nb_graph *g;
  nb_tensor *x[OC_MAX_IN], *y, *grad[OC_MAX_IN];
  void *data[OC_MAX_IN];
  size_t bytes[OC_MAX_IN];
  int n_in;
} oc_graph;

/* Inputs from the reference file, in the dtypes `kinds` asks for. */
static void oc_inputs(const oc_case *c, oc_graph *h) {
  h->n_in = (int)strlen(c->kinds);
  assert_true(h->n_in <= OC_MAX_IN);
  for (int i = 0; i < h->n_in; i++) {
    char key[16];
    int nd;
    int64_t shape[NB_MAX_DIMS], n;
    snprintf(key, sizeof key, "x%d", i);
    const float *v = oc_get(c, key, &nd, shape, &n);
    char k = c->kinds[i];
    nb_dtype dt = k == 'l' ? NB_I64 : k == 'i' ? NB_I32 : NB_F32;
    h->x[i] = nb_input(h->g, NULL, dt, nd, shape);
    assert_non_null(h->x[i]);
    if (k == 'g') nb_tensor_set_requires_grad(h->x[i], 1);
    h->bytes[i] = (size_t)n * nb_dtype_size(dt);
    h->data[i] = malloc(h->bytes[i] ? h->bytes[i] : 1);
    assert_non_null(h->data[i]);
    for (int64_t j = 0; j < n; j++) {
      if (dt == NB_I64)
        ((int64_t *)h->data[i])[j] = (int64_t)v[j];
      else if (dt == NB_I32)
        ((int32_t *)h->data[i])[j] = (int32_t)v[j];
      else
        ((float *)h->data[i])[j] = v[j];
    }
  }
}

static void oc_free_graph(oc_graph *h) {
  nb_graph_free(h->g);
  for (int i = 0; i < h->n_in; i++) free(h->data[i]);
}

/* Builds the case's graph; with_grad appends the backward pass of sum(y * R). */
static void oc_build(const oc_case *c, oc_graph *h, int with_grad) {
  memset(h, 0, sizeof *h);
  h->g = nb_graph_new();
  assert_non_null(h->g);
  oc_inputs(c, h);
  nb_tensor *y = c->build(h->g, h->x, c->ctx);
  if (!y) fail_msg("%s: build failed: %s", c->name, nb_graph_error(h->g));
  oc_assert_shape(c, "y", y);
  h->y = nb_cast(h->g, y, NB_F32);
  nb_tensor_set_output(h->y);
  if (!with_grad) return;
  int nd;
  int64_t shape[NB_MAX_DIMS];
  const float *r = oc_get(c, "R", &nd, shape, NULL);
  nb_tensor *R = nb_constant(h->g, NB_F32, nd, shape, r);
  nb_tensor *loss = nb_sum(h->g, nb_mul(h->g, y, R), 0, NULL, 0);
  TU_OK(nb_graph_backward(h->g, loss));
  for (int i = 0; i < h->n_in; i++) {
    if (c->kinds[i] != 'g') continue;
    h->grad[i] = nb_graph_grad(h->g, h->x[i]);
    if (h->grad[i]) nb_tensor_set_output(h->grad[i]);
  }
}

static void oc_compare(const oc_case *c, const char *array, nb_plan *p, const nb_tensor *t,
                       int64_t want_n) {
  int64_t n;
  const float *want = oc_get(c, array, NULL, NULL, &n);
  assert_int_equal(n, want_n);
  float *got = calloc((size_t)(n ? n : 1), sizeof *got);
  if (t) TU_OK(nb_plan_get(p, t, got, (size_t)n * sizeof *got));
  char what[256];
  snprintf(what, sizeof what, "%s: %s", c->name, array);
  tu_assert_close(what, got, want, (size_t)n, c->atol, c->rtol);
  free(got);
}

static void oc_run_case(void **state) {
  const oc_case *c = *state;
  oc_graph h;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_plan *p = NULL;
  char skipped[512] = "";
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  oc_build(c, &h, c->grad);
  nb_status s = nb_compile(h.g, be, st, NULL, &p);
  if (s == NB_ERR_UNSUPPORTED && c->grad) {
    /* A kernel that only the backward pass needs is missing on this build:
     * still check the forward value, and say what was left out. */
    snprintf(skipped, sizeof skipped, "%s", nb_last_error());
    oc_free_graph(&h);
    oc_build(c, &h, 0);
    s = nb_compile(h.g, be, st, NULL, &p);
  }
  if (s == NB_ERR_UNSUPPORTED) {
    fprintf(stderr, "[  SKIPPED ] %s: %s\n", c->name, nb_last_error());
    oc_free_graph(&h);
    nb_state_free(st);
    nb_backend_free(be);
    skip();
    return;
  }
  TU_OK(s);
  for (int i = 0; i < h.n_in; i++) TU_OK(nb_plan_set_input(p, h.x[i], h.data[i], h.bytes[i]));
  TU_OK(nb_plan_run(p));
  oc_compare(c, "y", p, h.y, nb_tensor_numel(h.y));
  for (int i = 0; c->grad && !skipped[0] && i < h.n_in; i++) {
    if (c->kinds[i] != 'g') continue;
    char key[16];
    snprintf(key, sizeof key, "g%d", i);
    oc_compare(c, key, p, h.grad[i], nb_tensor_numel(h.x[i]));
  }
  if (c->after) c->after(c, p, st);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  if (c->fd_eps > 0 && !skipped[0]) {
    tu_input in[OC_MAX_IN];
    int64_t *idata[OC_MAX_IN] = {0};
    memset(in, 0, sizeof in);
    for (int i = 0; i < h.n_in; i++) {
      in[i].ndim = nb_tensor_ndim(h.x[i]);
      for (int d = 0; d < in[i].ndim; d++) in[i].shape[d] = nb_tensor_shape(h.x[i])[d];
      in[i].requires_grad = c->kinds[i] == 'g';
      if (c->kinds[i] == 'l' || c->kinds[i] == 'i') {
        int64_t n = nb_tensor_numel(h.x[i]);
        idata[i] = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
        for (int64_t j = 0; j < n; j++)
          idata[i][j] = c->kinds[i] == 'l' ? ((int64_t *)h.data[i])[j] : ((int32_t *)h.data[i])[j];
        in[i].idata = idata[i];
        in[i].dtype = c->kinds[i] == 'l' ? NB_I64 : NB_I32;
      } else {
        in[i].data = h.data[i];
      }
    }
    tu_gradcheck(c->name, c->build, c->ctx, h.n_in, in, c->fd_eps, c->fd_atol, c->fd_rtol);
    for (int i = 0; i < h.n_in; i++) free(idata[i]);
  }
  oc_free_graph(&h);
  if (skipped[0]) {
    fprintf(stderr, "[  SKIPPED ] %s: gradients not checked: %s\n", c->name, skipped);
    skip();
  }
}

static int oc_teardown(void **state) {
  (void)state;
  tu_ref_free(oc_ref_file);
  oc_ref_file = NULL;
  return 0;
}

/* Runs the plain tests then one test per case (named after the case). */
static int oc_main(const char *suite, const struct CMUnitTest *plain, size_t n_plain,
                   const oc_case *cases, size_t n_cases) {
  struct CMUnitTest *all = calloc(n_plain + n_cases, sizeof *all);
  if (!all) return 1;
  for (size_t i = 0; i < n_plain; i++) all[i] = plain[i];
  for (size_t i = 0; i < n_cases; i++) {
    all[n_plain + i].name = cases[i].name;
    all[n_plain + i].test_func = oc_run_case;
    all[n_plain + i].initial_state = (void *)&cases[i];
  }
  int rc = _cmocka_run_group_tests(suite, all, n_plain + n_cases, NULL, oc_teardown);
  free(all);
  return rc;
}

/* ---- helpers for the plain tests -------------------------------------------------- */

/* Compiles g (outputs already marked) on the CPU; caller frees with oc_plan_free. */
typedef struct {
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
} oc_plan;

static void oc_compile(nb_graph *g, oc_plan *op) {
  if (nb_graph_status(g)) fail_msg("graph build failed: %s", nb_graph_error(g));
  TU_OK(nb_backend_new("cpu", &op->be));
  TU_OK(nb_state_new(op->be, &op->st));
  TU_OK(nb_compile(g, op->be, op->st, NULL, &op->p));
}

static void oc_plan_free(oc_plan *op) {
  nb_plan_free(op->p);
  nb_state_free(op->st);
  nb_backend_free(op->be);
}

/* Expects the graph to have failed with `st` and a message holding each of
 * the NULL-terminated strings in `parts` (op name, shapes, ...). */
static void oc_expect_error(const char *what, nb_graph *g, const nb_tensor *result, nb_status st,
                            const char *const *parts) {
  if (result) fail_msg("%s: expected NULL, got a %s node", what, nb_tensor_op_name(result));
  if (nb_graph_status(g) != st)
    fail_msg("%s: status %s, want %s (message: '%s')", what, nb_status_name(nb_graph_status(g)),
             nb_status_name(st), nb_graph_error(g));
  for (int i = 0; parts && parts[i]; i++)
    if (!strstr(nb_graph_error(g), parts[i]))
      fail_msg("%s: message '%s' does not mention '%s'", what, nb_graph_error(g), parts[i]);
}

#define OC_PARTS(...) ((const char *const[]){__VA_ARGS__, NULL})

#endif
