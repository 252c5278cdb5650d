#define _POSIX_C_SOURCE 200809L /* strdup */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float *tu_rand(size_t n, float lo, float hi, uint64_t seed) {
  float *v = malloc((n ? n : 1) * sizeof *v);
  assert_non_null(v);
  nb_rng r;
  nb_rng_seed(&r, seed);
  nb_rng_fill_uniform(&r, v, n, lo, hi);
  return v;
}

void tu_check_ok(nb_status st, const char *expr, const char *file, int line) {
  if (st == NB_OK) return;
  fail_msg("%s:%d: %s failed: %s: %s", file, line, expr, nb_status_name(st), nb_last_error());
}

void tu_snapshot_take(const nb_state *st, tu_snapshot *s) {
  memset(s, 0, sizeof *s);
  int n = nb_state_count(st);
  size_t k = n > 0 ? (size_t)n : 1;
  s->name = calloc(k, sizeof *s->name);
  s->v = calloc(k, sizeof *s->v);
  s->bytes = calloc(k, sizeof *s->bytes);
  assert_true(s->name && s->v && s->bytes);
  for (int i = 0; i < n; i++) {
    const char *name;
    nb_dtype dt;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(st, i, &name, &dt, &nd, &shape));
    s->bytes[i] = (size_t)nb_shape_numel(nd, shape) * nb_dtype_size(dt);
    s->name[i] = strdup(name);
    s->v[i] = malloc(s->bytes[i] + 1);
    assert_true(s->name[i] && s->v[i]);
    s->n = i + 1;
    TU_OK(nb_state_read(st, name, s->v[i], s->bytes[i]));
  }
}

void tu_snapshot_free(tu_snapshot *s) {
  for (int i = 0; i < s->n; i++) {
    free(s->name[i]);
    free(s->v[i]);
  }
  free(s->name);
  free(s->v);
  free(s->bytes);
  memset(s, 0, sizeof *s);
}

void tu_snapshot_assert_equal(const tu_snapshot *a, const tu_snapshot *b, const char *what) {
  if (a->n != b->n) fail_msg("%s: %d variables against %d", what, a->n, b->n);
  for (int i = 0; i < a->n; i++) {
    if (strcmp(a->name[i], b->name[i]))
      fail_msg("%s: variable %d is %s against %s", what, i, a->name[i], b->name[i]);
    if (a->bytes[i] != b->bytes[i] || memcmp(a->v[i], b->v[i], a->bytes[i]))
      fail_msg("%s: %s differs", what, a->name[i]);
  }
}

void tu_assert_close(const char *what, const float *got, const float *want, size_t n, double atol,
                     double rtol) {
  for (size_t i = 0; i < n; i++) {
    double g = got[i], w = want[i];
    if (isnan(g) && isnan(w)) continue;
    if (isinf(w) && g == w) continue;
    if (!(fabs(g - w) <= atol + rtol * fabs(w)))
      fail_msg("%s: element %zu: got %.8g, want %.8g (atol %g, rtol %g)", what, i, g, w, atol,
               rtol);
  }
}

typedef struct {
  nb_graph *g;
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  nb_tensor *x[16];
  nb_tensor *y;
  void *data[16];
  size_t bytes[16];
} harness;

static void harness_inputs(harness *h, int n_in, const tu_input *inputs) {
  assert_true(n_in <= 16);
  for (int i = 0; i < n_in; i++) {
    const tu_input *in = &inputs[i];
    nb_dtype dt = in->idata ? (in->dtype == NB_I32 ? NB_I32 : NB_I64) : NB_F32;
    h->x[i] = nb_input(h->g, NULL, dt, in->ndim, in->shape);
    assert_non_null(h->x[i]);
    if (in->requires_grad) nb_tensor_set_requires_grad(h->x[i], 1);
    int64_t n = nb_shape_numel(in->ndim, in->shape);
    h->bytes[i] = (size_t)n * nb_dtype_size(dt);
    h->data[i] = malloc(h->bytes[i] ? h->bytes[i] : 1);
    assert_non_null(h->data[i]);
    if (in->idata && dt == NB_I64) {
      memcpy(h->data[i], in->idata, h->bytes[i]);
    } else if (in->idata) {
      for (int64_t k = 0; k < n; k++) ((int32_t *)h->data[i])[k] = (int32_t)in->idata[k];
    } else if (in->data) {
      memcpy(h->data[i], in->data, h->bytes[i]);
    } else {
      float *r = tu_rand((size_t)n, in->lo, in->hi, in->seed ? in->seed : 1000u + (uint64_t)i);
      memcpy(h->data[i], r, h->bytes[i]);
      free(r);
    }
  }
}

static void harness_compile(harness *h, int n_in) {
  if (nb_graph_status(h->g)) fail_msg("graph build failed: %s", nb_graph_error(h->g));
  TU_OK(nb_backend_new("cpu", &h->be));
  TU_OK(nb_state_new(h->be, &h->st));
  TU_OK(nb_compile(h->g, h->be, h->st, NULL, &h->plan));
  for (int i = 0; i < n_in; i++)
    TU_OK(nb_plan_set_input(h->plan, h->x[i], h->data[i], h->bytes[i]));
}

static void harness_free(harness *h, int n_in) {
  nb_plan_free(h->plan);
  nb_state_free(h->st);
  nb_backend_free(h->be);
  nb_graph_free(h->g);
  for (int i = 0; i < n_in; i++) free(h->data[i]);
}

void tu_forward(tu_build_fn build, void *ctx, int n_in, const tu_input *inputs, float **out,
                int64_t *numel, int *ndim, int64_t *out_shape) {
  harness h = {0};
  h.g = nb_graph_new();
  harness_inputs(&h, n_in, inputs);
  h.y = build(h.g, h.x, ctx);
  if (!h.y) fail_msg("build failed: %s", nb_graph_error(h.g));
  nb_tensor *y = nb_cast(h.g, h.y, NB_F32);
  nb_tensor_set_output(y);
  harness_compile(&h, n_in);
  TU_OK(nb_plan_run(h.plan));
  int64_t n = nb_tensor_numel(y);
  *out = malloc((size_t)(n ? n : 1) * sizeof(float));
  TU_OK(nb_plan_get(h.plan, y, *out, (size_t)n * sizeof(float)));
  if (numel) *numel = n;
  if (ndim) *ndim = nb_tensor_ndim(y);
  if (out_shape)
    for (int d = 0; d < nb_tensor_ndim(y); d++) out_shape[d] = nb_tensor_shape(y)[d];
  harness_free(&h, n_in);
}

static double weighted_sum(const float *y, const float *r, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)y[i] * (double)r[i];
  return s;
}

void tu_gradcheck(const char *name, tu_build_fn build, void *ctx, int n_in, const tu_input *inputs,
                  double eps, double atol, double rtol) {
  harness h = {0};
  h.g = nb_graph_new();
  harness_inputs(&h, n_in, inputs);
  h.y = build(h.g, h.x, ctx);
  if (!h.y) fail_msg("%s: build failed: %s", name, nb_graph_error(h.g));
  int64_t ny = nb_tensor_numel(h.y);
  float *r = tu_rand((size_t)ny, -1.0f, 1.0f, 77);
  nb_tensor *R = nb_constant(h.g, NB_F32, nb_tensor_ndim(h.y), nb_tensor_shape(h.y), r);
  nb_tensor *loss = nb_sum(h.g, nb_mul(h.g, h.y, R), 0, NULL, 0);
  nb_tensor_set_output(h.y);
  TU_OK(nb_graph_backward(h.g, loss));
  nb_tensor *grads[16] = {0};
  for (int i = 0; i < n_in; i++) {
    if (!inputs[i].requires_grad) continue;
    grads[i] = nb_graph_grad(h.g, h.x[i]);
    if (grads[i]) nb_tensor_set_output(grads[i]);
  }
  harness_compile(&h, n_in);
  TU_OK(nb_plan_run(h.plan));
  float *y = malloc((size_t)(ny ? ny : 1) * sizeof *y);
  for (int i = 0; i < n_in; i++) {
    if (!inputs[i].requires_grad) continue;
    int64_t n = (int64_t)(h.bytes[i] / sizeof(float));
    float *analytic = calloc((size_t)(n ? n : 1), sizeof *analytic);
    if (grads[i]) {
      /* re-run with clean inputs: the plan may have been run with perturbed data */
      for (int k = 0; k < n_in; k++)
        TU_OK(nb_plan_set_input(h.plan, h.x[k], h.data[k], h.bytes[k]));
      TU_OK(nb_plan_run(h.plan));
      TU_OK(nb_plan_get(h.plan, grads[i], analytic, (size_t)n * sizeof(float)));
    }
    float *x = h.data[i];
    for (int64_t j = 0; j < n; j++) {
      float orig = x[j];
      x[j] = (float)(orig + eps);
      double hi_step = (double)x[j] - orig;
      TU_OK(nb_plan_set_input(h.plan, h.x[i], x, h.bytes[i]));
      TU_OK(nb_plan_run(h.plan));
      TU_OK(nb_plan_get(h.plan, h.y, y, (size_t)ny * sizeof(float)));
      double lp = weighted_sum(y, r, ny);
      x[j] = (float)(orig - eps);
      double lo_step = orig - (double)x[j];
      TU_OK(nb_plan_set_input(h.plan, h.x[i], x, h.bytes[i]));
      TU_OK(nb_plan_run(h.plan));
      TU_OK(nb_plan_get(h.plan, h.y, y, (size_t)ny * sizeof(float)));
      double lm = weighted_sum(y, r, ny);
      x[j] = orig;
      double numeric = (lp - lm) / (hi_step + lo_step);
      double a = analytic[j];
      if (!(fabs(a - numeric) <= atol + rtol * fabs(numeric)))
        fail_msg("%s: d/dx%d[%lld]: analytic %.7g vs numeric %.7g (atol %g, rtol %g)", name, i,
                 (long long)j, a, numeric, atol, rtol);
    }
    TU_OK(nb_plan_set_input(h.plan, h.x[i], x, h.bytes[i]));
    free(analytic);
  }
  free(y);
  free(r);
  harness_free(&h, n_in);
}

/* ---- reference files ----------------------------------------------------------
 * Text format, one array per line:
 *   case NAME
 *   ARRAY NDIM D0 D1 ... : V0 V1 ...
 *   end
 */

typedef struct {
  char case_name[128], name[256];
  int ndim;
  int64_t shape[NB_MAX_DIMS];
  int64_t numel;
  float *v;
} ref_array;

struct tu_ref {
  ref_array *a;
  int n, cap;
};

tu_ref *tu_ref_load(const char *file) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", NB_TEST_REF_DIR, file);
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("cannot open reference file %s", path);
  tu_ref *r = calloc(1, sizeof *r);
  char cur[128] = "";
  char tok[256];
  while (fscanf(f, "%255s", tok) == 1) {
    if (tok[0] == '#') {
      int ch;
      while ((ch = fgetc(f)) != EOF && ch != '\n') {
      }
      continue;
    }
    if (!strcmp(tok, "case")) {
      if (fscanf(f, "%127s", cur) != 1) fail_msg("%s: case without a name", path);
      continue;
    }
    if (!strcmp(tok, "end")) continue;
    if (r->n == r->cap) {
      r->cap = r->cap ? 2 * r->cap : 64;
      r->a = realloc(r->a, (size_t)r->cap * sizeof *r->a);
    }
    ref_array *a = &r->a[r->n++];
    memset(a, 0, sizeof *a);
    snprintf(a->case_name, sizeof a->case_name, "%s", cur);
    snprintf(a->name, sizeof a->name, "%s", tok);
    if (fscanf(f, "%d", &a->ndim) != 1 || a->ndim < 0 || a->ndim > NB_MAX_DIMS)
      fail_msg("%s: bad rank for %s/%s", path, cur, tok);
    a->numel = 1;
    for (int d = 0; d < a->ndim; d++) {
      long long v;
      if (fscanf(f, "%lld", &v) != 1) fail_msg("%s: bad shape for %s/%s", path, cur, tok);
      a->shape[d] = v;
      a->numel *= v;
    }
    if (fscanf(f, " %255s", tok) != 1 || strcmp(tok, ":"))
      fail_msg("%s: missing ':' in %s", path, cur);
    a->v = malloc((size_t)(a->numel ? a->numel : 1) * sizeof *a->v);
    for (int64_t i = 0; i < a->numel; i++) {
      if (fscanf(f, "%255s", tok) != 1)
        fail_msg("%s: truncated values in %s/%s", path, cur, a->name);
      a->v[i] = strtof(tok, NULL); /* accepts nan, inf */
    }
  }
  fclose(f);
  return r;
}

void tu_ref_free(tu_ref *r) {
  if (!r) return;
  for (int i = 0; i < r->n; i++) free(r->a[i].v);
  free(r->a);
  free(r);
}

const float *tu_ref_get(const tu_ref *r, const char *case_name, const char *name, int *ndim,
                        int64_t *shape, int64_t *numel) {
  for (int i = 0; i < r->n; i++) {
    const ref_array *a = &r->a[i];
    if (strcmp(a->case_name, case_name) || strcmp(a->name, name)) continue;
    if (ndim) *ndim = a->ndim;
    if (shape)
      for (int d = 0; d < a->ndim; d++) shape[d] = a->shape[d];
    if (numel) *numel = a->numel;
    return a->v;
  }
  fail_msg("reference %s/%s not found", case_name, name);
  return NULL;
}

int32_t *tu_text_tokens(const char *path, int64_t *n, int *vocab) {
  char *text;
  size_t len;
  TU_OK(nb_text_read_file(path, &text, &len));
  nb_char_vocab v;
  TU_OK(nb_char_vocab_build(text, len, &v));
  int32_t *ids = malloc(len * sizeof *ids);
  assert_non_null(ids);
  TU_OK(nb_char_encode(&v, text, len, ids));
  free(text);
  *n = (int64_t)len;
  *vocab = v.size;
  return ids;
}

/* ---- one compiled graph ------------------------------------------------------ */

void tu_runner_compile(nb_graph *g, const nb_compile_options *opt, tu_runner *r) {
  if (nb_graph_status(g)) fail_msg("graph build failed: %s", nb_graph_error(g));
  TU_OK(nb_backend_new("cpu", &r->be));
  TU_OK(nb_state_new(r->be, &r->st));
  TU_OK(nb_compile(g, r->be, r->st, opt, &r->plan));
}

void tu_runner_feed(tu_runner *r, nb_tensor *in, const float *data) {
  TU_OK(nb_plan_set_input(r->plan, in, data, (size_t)nb_tensor_numel(in) * sizeof(float)));
}

float *tu_runner_fetch(tu_runner *r, nb_tensor *t) {
  int64_t n = nb_tensor_numel(t);
  float *out = malloc((size_t)(n ? n : 1) * sizeof(float));
  TU_OK(nb_plan_get(r->plan, t, out, (size_t)n * sizeof(float)));
  return out;
}

void tu_runner_free(tu_runner *r) {
  nb_plan_free(r->plan);
  nb_state_free(r->st);
  nb_backend_free(r->be);
}

void tu_conv_all(const int64_t *xs, const int64_t *ws, const nb_conv2d_params *p, const float *x,
                 const float *w, const float *dy, float **y, float **dx, float **dw) {
  nb_graph *g = nb_graph_new();
  nb_tensor *xi = nb_input(g, "x", NB_F32, 4, xs), *wi = nb_input(g, "w", NB_F32, 4, ws);
  nb_tensor *yi = nb_conv2d(g, xi, wi, p);
  TU_OK(nb_graph_status(g));
  nb_tensor *di = nb_input(g, "dy", NB_F32, 4, nb_tensor_shape(yi));
  nb_tensor *outs[3] = {yi, nb_conv2d_backward_input(g, di, wi, xs, p),
                        nb_conv2d_backward_weight(g, xi, di, ws, p)};
  for (int i = 0; i < 3; i++) nb_tensor_set_output(outs[i]);
  tu_runner r;
  tu_runner_compile(g, NULL, &r);
  tu_runner_feed(&r, xi, x);
  tu_runner_feed(&r, wi, w);
  tu_runner_feed(&r, di, dy);
  TU_OK(nb_plan_run(r.plan));
  *y = tu_runner_fetch(&r, outs[0]);
  *dx = tu_runner_fetch(&r, outs[1]);
  *dw = tu_runner_fetch(&r, outs[2]);
  tu_runner_free(&r);
  nb_graph_free(g);
}
