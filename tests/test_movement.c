/* Data movement ops: concat, pad, index_select, index_add, one_hot (and the
 * step slice whose gradient is an index_add). Values and gradients against
 * PyTorch, naive loops over strided views and other dtypes, sizes that take
 * the threaded paths, finite-difference gradients, and errors at build and
 * run time. */
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------- */

/* Wraps an op so tu_forward returns d(sum(op(x) * r))/dx[grad_of] instead of
 * op(x) when grad_of >= 0. */
typedef struct {
  tu_build_fn op;
  void *ctx;
  const float *r;
  int grad_of;
} grad_ctx;

static nb_tensor *build_grad(nb_graph *g, nb_tensor **x, void *vctx) {
  const grad_ctx *c = vctx;
  nb_tensor *y = c->op(g, x, c->ctx);
  if (!y || c->grad_of < 0) return y;
  nb_tensor *r = nb_constant(g, NB_F32, nb_tensor_ndim(y), nb_tensor_shape(y), c->r);
  nb_tensor *loss = nb_sum(g, nb_mul(g, y, r), 0, NULL, 0);
  if (nb_graph_backward(g, loss)) fail_msg("backward failed: %s", nb_last_error());
  return nb_graph_grad(g, x[c->grad_of]);
}

/* Runs op on `in` and checks the output against want (n elements). */
static void check_forward(const char *what, tu_build_fn op, void *ctx, int n_in, const tu_input *in,
                          const float *want, int64_t n, double atol) {
  float *y;
  int64_t ny;
  tu_forward(op, ctx, n_in, in, &y, &ny, NULL, NULL);
  if (ny != n) fail_msg("%s: %lld elements, want %lld", what, (long long)ny, (long long)n);
  tu_assert_close(what, y, want, (size_t)n, atol, 0.0);
  free(y);
}

/* Checks op's output and the gradients of sum(y * r) for the inputs listed in
 * grad_of against a reference case. */
static void check_ref(const tu_ref *ref, const char *name, tu_build_fn op, void *ctx, int n_in,
                      const tu_input *in, int n_grad, const int *grad_of,
                      const char *const *grad_names) {
  int64_t ny;
  const float *y_want = tu_ref_get(ref, name, "y", NULL, NULL, &ny);
  grad_ctx gc = {.op = op, .ctx = ctx, .r = NULL, .grad_of = -1};
  char what[160];
  snprintf(what, sizeof what, "%s y", name);
  check_forward(what, build_grad, &gc, n_in, in, y_want, ny, 1e-6);
  if (!n_grad) return;
  gc.r = tu_ref_get(ref, name, "r", NULL, NULL, NULL);
  for (int k = 0; k < n_grad; k++) {
    int64_t n;
    const float *want = tu_ref_get(ref, name, grad_names[k], NULL, NULL, &n);
    gc.grad_of = grad_of[k];
    snprintf(what, sizeof what, "%s %s", name, grad_names[k]);
    check_forward(what, build_grad, &gc, n_in, in, want, n, 1e-5);
  }
}

/* A tu_input holding reference array `name` of case `cs`. */
static tu_input ref_input(const tu_ref *ref, const char *cs, const char *name, int rg) {
  tu_input in = {.requires_grad = rg};
  in.data = tu_ref_get(ref, cs, name, &in.ndim, in.shape, NULL);
  return in;
}

/* The same as an i64 input (indices are stored as exact floats). */
static tu_input ref_index(const tu_ref *ref, const char *cs, const char *name, int64_t *buf,
                          int64_t cap) {
  tu_input in = {0};
  int64_t n;
  const float *v = tu_ref_get(ref, cs, name, &in.ndim, in.shape, &n);
  assert_true(n <= cap);
  for (int64_t i = 0; i < n; i++) buf[i] = (int64_t)v[i];
  in.idata = buf;
  in.dtype = NB_I64;
  return in;
}

/* Views applied to an input before the op, to exercise strided reads. */
enum { V_NONE, V_T, V_STEP2, V_STEP2_T, V_BCAST };

static nb_tensor *view(nb_graph *g, nb_tensor *x, int kind, const int64_t *bshape) {
  switch (kind) {
  case V_T: return nb_transpose(g, x, 0, 1);
  case V_STEP2: return nb_slice(g, x, 0, 0, INT64_MAX, 2);
  case V_STEP2_T: return nb_transpose(g, nb_slice(g, x, 0, 0, INT64_MAX, 2), 0, 1);
  case V_BCAST: return nb_broadcast_to(g, x, 2, bshape);
  default: return x;
  }
}

typedef struct {
  int axis;
  int v[3];          /* view of each input */
  int64_t bshape[2]; /* for V_BCAST */
  int64_t pads[2 * NB_MAX_DIMS];
  float value;
  nb_dtype dt; /* cast f32 inputs to this first (0 = f32) */
  int zero_x;  /* index_add: x = broadcast scalar zero */
  int64_t classes;
  int64_t start, stop, step;
} mv_ctx;

static nb_tensor *in_view(nb_graph *g, nb_tensor *x, const mv_ctx *c, int k) {
  if (c->dt != NB_F32 && nb_tensor_dtype(x) == NB_F32) x = nb_cast(g, x, c->dt);
  return view(g, x, c->v[k], c->bshape);
}

static nb_tensor *build_concat2(nb_graph *g, nb_tensor **x, void *vctx) {
  const mv_ctx *c = vctx;
  nb_tensor *xs[2] = {in_view(g, x[0], c, 0), in_view(g, x[1], c, 1)};
  return nb_concat(g, 2, xs, c->axis);
}

static nb_tensor *build_concat3(nb_graph *g, nb_tensor **x, void *vctx) {
  const mv_ctx *c = vctx;
  nb_tensor *xs[3] = {in_view(g, x[0], c, 0), in_view(g, x[1], c, 1), in_view(g, x[2], c, 2)};
  return nb_concat(g, 3, xs, c->axis);
}

static nb_tensor *build_pad(nb_graph *g, nb_tensor **x, void *vctx) {
  const mv_ctx *c = vctx;
  return nb_pad(g, in_view(g, x[0], c, 0), c->pads, c->value);
}

static nb_tensor *build_index_select(nb_graph *g, nb_tensor **x, void *vctx) {
  const mv_ctx *c = vctx;
  return nb_index_select(g, in_view(g, x[0], c, 0), c->axis, in_view(g, x[1], c, 1));
}

static nb_tensor *build_index_add(nb_graph *g, nb_tensor **x, void *vctx) {
  const mv_ctx *c = vctx;
  nb_tensor *src = in_view(g, x[2], c, 2);
  nb_tensor *base;
  if (c->zero_x) {
    int64_t shape[NB_MAX_DIMS];
    int nd = nb_tensor_ndim(src);
    memcpy(shape, nb_tensor_shape(src), (size_t)nd * sizeof *shape);
    shape[c->axis] = c->bshape[0];
    base = nb_broadcast_to(g, nb_scalar(g, 0.0f), nd, shape);
  } else {
    base = in_view(g, x[0], c, 0);
  }
  return nb_index_add(g, base, c->axis, in_view(g, x[1], c, 1), src);
}

static nb_tensor *build_slice(nb_graph *g, nb_tensor **x, void *vctx) {
  const mv_ctx *c = vctx;
  return nb_slice(g, in_view(g, x[0], c, 0), c->axis, c->start, c->stop, c->step);
}

static nb_tensor *build_one_hot(nb_graph *g, nb_tensor **x, void *vctx) {
  const mv_ctx *c = vctx;
  return nb_one_hot(g, in_view(g, x[0], c, 0), c->classes);
}

/* ---- against PyTorch -------------------------------------------------------------- */

static void test_torch_ref(void **state) {
  (void)state;
  tu_ref *ref = tu_ref_load("movement.txt");
  int64_t ibuf[64];

  tu_input cin[2] = {ref_input(ref, "concat", "a", 1), ref_input(ref, "concat", "b", 1)};
  mv_ctx cc = {.axis = 1};
  check_ref(ref, "concat", build_concat2, &cc, 2, cin, 2, (int[]){0, 1},
            (const char *[]){"da", "db"});

  tu_input pin = ref_input(ref, "pad", "x", 1);
  mv_ctx pc = {.value = 0.5f};
  const float *pads = tu_ref_get(ref, "pad", "pads", NULL, NULL, NULL);
  for (int i = 0; i < 2 * pin.ndim; i++) pc.pads[i] = (int64_t)pads[i];
  check_ref(ref, "pad", build_pad, &pc, 1, &pin, 1, (int[]){0}, (const char *[]){"dx"});

  tu_input sin[2] = {ref_input(ref, "index_select", "x", 1),
                     ref_index(ref, "index_select", "index", ibuf, 64)};
  mv_ctx sc = {.axis = 1};
  check_ref(ref, "index_select", build_index_select, &sc, 2, sin, 1, (int[]){0},
            (const char *[]){"dx"});
  /* the same with an i32 index */
  sin[1].dtype = NB_I32;
  check_ref(ref, "index_select", build_index_select, &sc, 2, sin, 0, NULL, NULL);

  static const struct {
    const char *name;
    int axis;
  } adds[] = {{"index_add_ax0", 0}, {"index_add_ax1", 1}};
  for (int k = 0; k < 2; k++) {
    const char *cs = adds[k].name;
    tu_input ain[3] = {ref_input(ref, cs, "x", 1), ref_index(ref, cs, "index", ibuf, 64),
                       ref_input(ref, cs, "src", 1)};
    mv_ctx ac = {.axis = adds[k].axis};
    check_ref(ref, cs, build_index_add, &ac, 3, ain, 2, (int[]){0, 2},
              (const char *[]){"dx", "dsrc"});
  }

  tu_input lin = ref_input(ref, "slice_step2", "x", 1);
  mv_ctx lc = {.axis = 1, .start = 1, .stop = 7, .step = 2};
  check_ref(ref, "slice_step2", build_slice, &lc, 1, &lin, 1, (int[]){0}, (const char *[]){"dx"});

  tu_input oin = ref_index(ref, "one_hot", "labels", ibuf, 64);
  mv_ctx oc = {.classes = 5};
  check_ref(ref, "one_hot", build_one_hot, &oc, 1, &oin, 0, NULL, NULL);
  oin.dtype = NB_I32;
  check_ref(ref, "one_hot", build_one_hot, &oc, 1, &oin, 0, NULL, NULL);
  tu_ref_free(ref);
}

/* ---- strided inputs against naive loops ----------------------------------------- */

static void test_concat_strided(void **state) {
  (void)state;
  float *a = tu_rand(8, -1, 1, 1), *b = tu_rand(20, -1, 1, 2);
  /* a^T [2, 4] ++ b[::2]^T [2, 5] on axis 1: both strides non-unit */
  tu_input in[2] = {{.ndim = 2, .shape = {4, 2}, .data = a, .requires_grad = 1},
                    {.ndim = 2, .shape = {10, 2}, .data = b, .requires_grad = 1}};
  mv_ctx c = {.axis = 1, .v = {V_T, V_STEP2_T}};
  float want[18];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 9; j++) want[i * 9 + j] = j < 4 ? a[j * 2 + i] : b[(2 * (j - 4)) * 2 + i];
  check_forward("concat of strided views", build_concat2, &c, 2, in, want, 18, 0);
  tu_gradcheck("concat of strided views", build_concat2, &c, 2, in, 1e-3, 1e-4, 1e-2);

  /* three inputs on axis 0: p^T [4, 3], q [1, 3] broadcast to [2, 3], s[::2] */
  float *p = tu_rand(12, -1, 1, 3), *q = tu_rand(3, -1, 1, 4), *s = tu_rand(18, -1, 1, 5);
  tu_input in3[3] = {{.ndim = 2, .shape = {3, 4}, .data = p, .requires_grad = 1},
                     {.ndim = 2, .shape = {1, 3}, .data = q, .requires_grad = 1},
                     {.ndim = 2, .shape = {6, 3}, .data = s, .requires_grad = 1}};
  mv_ctx c3 = {.axis = 0, .v = {V_T, V_BCAST, V_STEP2}, .bshape = {2, 3}};
  float want3[27];
  for (int r = 0; r < 9; r++)
    for (int k = 0; k < 3; k++)
      want3[r * 3 + k] = r < 4 ? p[k * 4 + r] : r < 6 ? q[k] : s[(2 * (r - 6)) * 3 + k];
  check_forward("concat of three views", build_concat3, &c3, 3, in3, want3, 27, 0);
  tu_gradcheck("concat of three views", build_concat3, &c3, 3, in3, 1e-3, 1e-4, 1e-2);
  free(a), free(b), free(p), free(q), free(s);
}

static void test_pad_strided(void **state) {
  (void)state;
  float *x = tu_rand(12, -1, 1, 6);
  /* x^T [4, 3] padded (0, 1) on axis 0 and (2, 0) on axis 1 -> [5, 5] */
  tu_input in = {.ndim = 2, .shape = {3, 4}, .data = x, .requires_grad = 1};
  mv_ctx c = {.v = {V_T}, .pads = {0, 1, 2, 0}, .value = -1.0f};
  float want[25];
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 5; j++) want[i * 5 + j] = i < 4 && j >= 2 ? x[(j - 2) * 4 + i] : -1.0f;
  check_forward("pad of a transpose", build_pad, &c, 1, &in, want, 25, 0);
  tu_gradcheck("pad of a transpose", build_pad, &c, 1, &in, 1e-3, 1e-4, 1e-2);
  free(x);
}

static void test_index_select_strided(void **state) {
  (void)state;
  float *x = tu_rand(20, -1, 1, 7);
  /* the odd entries (9) are out of range for axis 1: reading index[::2]
   * with the wrong stride would fail the run */
  const int64_t idx[8] = {4, 9, 0, 9, 4, 9, 2, 9};
  tu_input in[2] = {{.ndim = 2, .shape = {5, 4}, .data = x, .requires_grad = 1},
                    {.ndim = 1, .shape = {8}, .idata = idx}};
  /* x^T [4, 5] selected on axis 1 with {4, 0, 4, 2} -> [4, 4] */
  mv_ctx c = {.axis = 1, .v = {V_T, V_STEP2}};
  float want[16];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) want[i * 4 + j] = x[idx[2 * j] * 4 + i];
  check_forward("index_select axis 1 of a transpose", build_index_select, &c, 2, in, want, 16, 0);
  tu_gradcheck("index_select axis 1 of a transpose", build_index_select, &c, 2, in, 1e-3, 1e-4,
               1e-2);

  /* axis 0 of x^T (rows are strided) with an i32 index {3, 3, 1} -> [3, 5] */
  const int64_t idx0[3] = {3, 3, 1};
  tu_input in0[2] = {in[0], {.ndim = 1, .shape = {3}, .idata = idx0, .dtype = NB_I32}};
  mv_ctx c0 = {.axis = 0, .v = {V_T, V_NONE}};
  float want0[15];
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 5; j++) want0[i * 5 + j] = x[j * 4 + idx0[i]];
  check_forward("index_select axis 0 of a transpose", build_index_select, &c0, 2, in0, want0, 15,
                0);
  tu_gradcheck("index_select axis 0 of a transpose", build_index_select, &c0, 2, in0, 1e-3, 1e-4,
               1e-2);
  free(x);
}

static void test_index_add_strided(void **state) {
  (void)state;
  float *x = tu_rand(20, -1, 1, 8), *src = tu_rand(12, -1, 1, 9);
  const int64_t idx[3] = {4, 0, 4};
  /* zeros [4, 5] (a broadcast scalar) + src^T [4, 3] on axis 1 at {4, 0, 4} */
  tu_input in[3] = {{.ndim = 2, .shape = {5, 4}, .data = x, .requires_grad = 1},
                    {.ndim = 1, .shape = {3}, .idata = idx},
                    {.ndim = 2, .shape = {3, 4}, .data = src, .requires_grad = 1}};
  mv_ctx cz = {.axis = 1, .v = {V_T, V_NONE, V_T}, .zero_x = 1, .bshape = {5}};
  float want[20] = {0};
  for (int i = 0; i < 4; i++)
    for (int k = 0; k < 3; k++) want[i * 5 + idx[k]] += src[k * 4 + i];
  check_forward("index_add into broadcast zeros", build_index_add, &cz, 3, in, want, 20, 1e-7);
  tu_gradcheck("index_add into broadcast zeros", build_index_add, &cz, 3, in, 1e-3, 1e-4, 1e-2);

  /* x^T [4, 5] + src^T: both strided, both differentiated */
  mv_ctx cx = {.axis = 1, .v = {V_T, V_NONE, V_T}};
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 5; j++) want[i * 5 + j] = x[j * 4 + i];
  for (int i = 0; i < 4; i++)
    for (int k = 0; k < 3; k++) want[i * 5 + idx[k]] += src[k * 4 + i];
  check_forward("index_add of transposes", build_index_add, &cx, 3, in, want, 20, 1e-6);
  tu_gradcheck("index_add of transposes", build_index_add, &cx, 3, in, 1e-3, 1e-4, 1e-2);
  free(x);
  free(src);
}

/* in_view casts f32 inputs only; integer inputs go through a cast here. */
static nb_tensor *build_one_hot_u8(nb_graph *g, nb_tensor **x, void *vctx) {
  const mv_ctx *c = vctx;
  return nb_one_hot(g, view(g, nb_cast(g, x[0], NB_U8), c->v[0], c->bshape), c->classes);
}

static void test_one_hot_strided(void **state) {
  (void)state;
  const int64_t lab[6] = {0, 3, 2, 2, 1, 0};
  /* labels [3, 2] transposed -> [2, 3], 4 classes -> [2, 3, 4] */
  tu_input in = {.ndim = 2, .shape = {3, 2}, .idata = lab};
  mv_ctx c = {.v = {V_T}, .classes = 4};
  float want[24] = {0};
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++) want[(i * 3 + j) * 4 + lab[j * 2 + i]] = 1.0f;
  check_forward("one_hot of a transpose", build_one_hot, &c, 1, &in, want, 24, 0);
  in.dtype = NB_I32;
  check_forward("one_hot of a transposed i32", build_one_hot, &c, 1, &in, want, 24, 0);
  check_forward("one_hot of a transposed u8", build_one_hot_u8, &c, 1, &in, want, 24, 0);
}

static void test_one_hot_u8(void **state) {
  (void)state;
  const int64_t lab[4] = {2, 0, 255, 1};
  tu_input in = {.ndim = 1, .shape = {4}, .idata = lab, .dtype = NB_I32};
  mv_ctx c = {.classes = 256};
  float *want = calloc(4 * 256, sizeof *want);
  for (int i = 0; i < 4; i++) want[i * 256 + lab[i]] = 1.0f;
  check_forward("one_hot of u8 labels", build_one_hot_u8, &c, 1, &in, want, 4 * 256, 0);
  free(want);
}

static void test_slice_step2_gradcheck(void **state) {
  (void)state;
  tu_input in = {.ndim = 2, .shape = {3, 7}, .lo = -1, .hi = 1, .seed = 10, .requires_grad = 1};
  mv_ctx c = {.axis = 1, .start = 1, .stop = 7, .step = 2};
  tu_gradcheck("x[:, 1:7:2]", build_slice, &c, 1, &in, 1e-3, 1e-4, 1e-2);
  /* a step slice of a transpose: x^T[::2] along the strided axis */
  mv_ctx ct = {.axis = 0, .start = 0, .stop = 7, .step = 2, .v = {V_T}};
  tu_gradcheck("x^T[::2]", build_slice, &ct, 1, &in, 1e-3, 1e-4, 1e-2);
  /* the step-1 case goes through pad */
  mv_ctx c1 = {.axis = 1, .start = 2, .stop = 5, .step = 1};
  tu_gradcheck("x[:, 2:5]", build_slice, &c1, 1, &in, 1e-3, 1e-4, 1e-2);
}

static void test_movement_gradcheck(void **state) {
  (void)state;
  tu_input cin[2] = {
      {.ndim = 3, .shape = {2, 3, 4}, .lo = -1, .hi = 1, .seed = 11, .requires_grad = 1},
      {.ndim = 3, .shape = {2, 2, 4}, .lo = -1, .hi = 1, .seed = 12, .requires_grad = 1}};
  mv_ctx cc = {.axis = 1};
  tu_gradcheck("concat", build_concat2, &cc, 2, cin, 1e-3, 1e-4, 1e-2);

  mv_ctx pc = {.pads = {1, 0, 0, 2, 2, 1}, .value = 3.0f};
  tu_gradcheck("pad", build_pad, &pc, 1, cin, 1e-3, 1e-4, 1e-2);

  const int64_t idx[6] = {3, 0, 0, 2, 3, 1};
  tu_input sin[2] = {cin[0], {.ndim = 1, .shape = {6}, .idata = idx}};
  mv_ctx sc = {.axis = 2};
  tu_gradcheck("index_select", build_index_select, &sc, 2, sin, 1e-3, 1e-4, 1e-2);

  const int64_t aidx[4] = {1, 3, 1, 1};
  tu_input ain[3] = {
      cin[0],
      {.ndim = 1, .shape = {4}, .idata = aidx},
      {.ndim = 3, .shape = {2, 3, 4}, .lo = -1, .hi = 1, .seed = 13, .requires_grad = 1}};
  mv_ctx ac = {.axis = 2};
  tu_gradcheck("index_add", build_index_add, &ac, 3, ain, 1e-3, 1e-4, 1e-2);
}

/* ---- other dtypes ------------------------------------------------------------------ */

static void test_movement_dtypes(void **state) {
  (void)state;
  /* small integers: exact in every dtype, u8 and bf16 included */
  float a[6], b[6];
  for (int i = 0; i < 6; i++) a[i] = (float)(3 * i + 1), b[i] = (float)(100 + 7 * i);
  tu_input in[2] = {{.ndim = 2, .shape = {2, 3}, .data = a},
                    {.ndim = 2, .shape = {3, 2}, .data = b}};
  const int64_t idx[4] = {2, 0, 2, 1};
  tu_input sin[2] = {in[0], {.ndim = 1, .shape = {4}, .idata = idx}};
  const nb_dtype dts[5] = {NB_F16, NB_BF16, NB_I32, NB_I64, NB_U8};
  for (int k = 0; k < 5; k++) {
    char what[96];
    const char *dn = nb_dtype_name(dts[k]);
    /* concat(a [2, 3], b^T [2, 3]) on axis 0 */
    mv_ctx cc = {.axis = 0, .v = {V_NONE, V_T}, .dt = dts[k]};
    float want[12];
    for (int i = 0; i < 6; i++) want[i] = a[i];
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) want[6 + i * 3 + j] = b[j * 2 + i];
    snprintf(what, sizeof what, "concat %s", dn);
    check_forward(what, build_concat2, &cc, 2, in, want, 12, 0);

    /* pad(b^T) by (1, 0), (0, 2) with 7, and with a dtype-specific value */
    float fills[2] = {7.0f, nb_dtype_is_float(dts[k]) ? -1.5f : dts[k] == NB_U8 ? 250.0f : -3.0f};
    for (int f = 0; f < 2; f++) {
      mv_ctx pc = {.v = {V_T}, .pads = {1, 0, 0, 2}, .value = fills[f], .dt = dts[k]};
      float pw[15];
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) pw[i * 5 + j] = i >= 1 && j < 3 ? b[j * 2 + (i - 1)] : fills[f];
      snprintf(what, sizeof what, "pad %s with %g", dn, (double)fills[f]);
      check_forward(what, build_pad, &pc, 1, &in[1], pw, 15, 0);
    }

    /* index_select(a^T [3, 2], axis 0, {2, 0, 2, 1}) */
    mv_ctx sc = {.axis = 0, .v = {V_T}, .dt = dts[k]};
    float sw[8];
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 2; j++) sw[i * 2 + j] = a[j * 3 + idx[i]];
    snprintf(what, sizeof what, "index_select %s", dn);
    check_forward(what, build_index_select, &sc, 2, sin, sw, 8, 0);
  }
}

/* ---- sizes that take the threaded paths ------------------------------------------------ */

static void test_movement_large(void **state) {
  (void)state;
  nb_set_num_threads(2);
  /* concat(a [70, 500], b^T [70, 600]) on axis 1 */
  float *a = tu_rand(35000, -1, 1, 20), *b = tu_rand(42000, -1, 1, 21);
  tu_input cin[2] = {{.ndim = 2, .shape = {70, 500}, .data = a},
                     {.ndim = 2, .shape = {600, 70}, .data = b}};
  mv_ctx cc = {.axis = 1, .v = {V_NONE, V_T}};
  float *want = malloc(70 * 1100 * sizeof *want);
  for (int i = 0; i < 70; i++)
    for (int j = 0; j < 1100; j++)
      want[i * 1100 + j] = j < 500 ? a[i * 500 + j] : b[(j - 500) * 70 + i];
  check_forward("large concat", build_concat2, &cc, 2, cin, want, 70 * 1100, 0);
  free(want);

  /* on axis 0, a is one run of 35000 elements (split for threads) and b's
   * first row broadcast to [40, 500] one stride-0 run */
  tu_input cin0[2] = {{.ndim = 2, .shape = {70, 500}, .data = a},
                      {.ndim = 2, .shape = {1, 500}, .data = b}};
  mv_ctx cc0 = {.axis = 0, .v = {V_NONE, V_BCAST}, .bshape = {40, 500}};
  want = malloc(110 * 500 * sizeof *want);
  memcpy(want, a, 35000 * sizeof *want);
  for (int i = 0; i < 40; i++) memcpy(want + 35000 + i * 500, b, 500 * sizeof *want);
  check_forward("large concat on axis 0", build_concat2, &cc0, 2, cin0, want, 110 * 500, 0);
  free(want);

  /* pad(a as [200, 175]) by (1, 2), (3, 4) */
  tu_input pin = {.ndim = 2, .shape = {200, 175}, .data = a};
  mv_ctx pc = {.pads = {1, 2, 3, 4}, .value = 2.5f};
  want = malloc(203 * 182 * sizeof *want);
  for (int i = 0; i < 203; i++)
    for (int j = 0; j < 182; j++)
      want[i * 182 + j] = i >= 1 && i < 201 && j >= 3 && j < 178 ? a[(i - 1) * 175 + j - 3] : 2.5f;
  check_forward("large pad", build_pad, &pc, 1, &pin, want, 203 * 182, 0);
  free(want);

  /* embedding-like: b as [1000, 42], 700 ids */
  int64_t *ids = malloc(700 * sizeof *ids);
  for (int i = 0; i < 700; i++) ids[i] = (i * 7919) % 1000;
  tu_input sin[2] = {{.ndim = 2, .shape = {1000, 42}, .data = b},
                     {.ndim = 1, .shape = {700}, .idata = ids}};
  mv_ctx sc = {.axis = 0};
  want = malloc(700 * 42 * sizeof *want);
  for (int i = 0; i < 700; i++) memcpy(want + i * 42, b + ids[i] * 42, 42 * sizeof *want);
  check_forward("large index_select", build_index_select, &sc, 2, sin, want, 700 * 42, 0);
  free(want);

  /* a gather of 9000 scalars per row along the last axis of a [4, 50] */
  int64_t *cols = malloc(9000 * sizeof *cols);
  for (int i = 0; i < 9000; i++) cols[i] = (i * 37 + i / 50) % 50;
  tu_input gin[2] = {{.ndim = 2, .shape = {4, 50}, .data = a},
                     {.ndim = 1, .shape = {9000}, .idata = cols}};
  mv_ctx gc = {.axis = 1};
  want = malloc(4 * 9000 * sizeof *want);
  for (int r = 0; r < 4; r++)
    for (int i = 0; i < 9000; i++) want[r * 9000 + i] = a[r * 50 + cols[i]];
  check_forward("long gather on the last axis", build_index_select, &gc, 2, gin, want, 36000, 0);
  free(want);
  free(cols);

  /* index_add of src [200, 210] into zeros [50, 210] on axis 0 (several
   * column blocks) and of src^T [210, 200] into zeros [210, 50] on axis 1.
   * Sums run in index order, so the result must match this loop bit for bit. */
  int64_t *aidx = malloc(200 * sizeof *aidx);
  for (int i = 0; i < 200; i++) aidx[i] = (i * 31) % 50;
  tu_input ain[3] = {{.ndim = 1, .shape = {1}, .data = a},
                     {.ndim = 1, .shape = {200}, .idata = aidx},
                     {.ndim = 2, .shape = {200, 210}, .data = b}};
  want = calloc(50 * 210, sizeof *want);
  for (int i = 0; i < 200; i++)
    for (int j = 0; j < 210; j++) want[aidx[i] * 210 + j] += b[i * 210 + j];
  mv_ctx a0 = {.axis = 0, .zero_x = 1, .bshape = {50}};
  check_forward("large index_add axis 0", build_index_add, &a0, 3, ain, want, 50 * 210, 0);
  mv_ctx a1 = {.axis = 1, .zero_x = 1, .bshape = {50}, .v = {V_NONE, V_NONE, V_T}};
  float *want_t = malloc(50 * 210 * sizeof *want_t);
  for (int i = 0; i < 210; i++)
    for (int j = 0; j < 50; j++) want_t[i * 50 + j] = want[j * 210 + i];
  check_forward("large index_add axis 1", build_index_add, &a1, 3, ain, want_t, 50 * 210, 0);
  free(want);
  free(want_t);

  /* one_hot of 40000 labels */
  int64_t *lab = malloc(40000 * sizeof *lab);
  for (int i = 0; i < 40000; i++) lab[i] = (i * 13) % 3;
  tu_input oin = {.ndim = 1, .shape = {40000}, .idata = lab};
  mv_ctx oc = {.classes = 3};
  want = calloc(120000, sizeof *want);
  for (int i = 0; i < 40000; i++) want[i * 3 + lab[i]] = 1.0f;
  check_forward("large one_hot", build_one_hot, &oc, 1, &oin, want, 120000, 0);
  free(want);
  free(lab);
  free(aidx);
  free(ids);
  free(a);
  free(b);
  nb_set_num_threads(0);
}

/* ---- empty tensors ------------------------------------------------------------------- */

static void test_movement_empty(void **state) {
  (void)state;
  static const int64_t none[1] = {0};
  float x[6] = {1, 2, 3, 4, 5, 6};
  tu_input x23 = {.ndim = 2, .shape = {2, 3}, .data = x, .requires_grad = 1};
  tu_input no_idx = {.ndim = 1, .shape = {0}, .idata = none};

  /* index_select with no indices: [2, 0] */
  tu_input sin[2] = {x23, no_idx};
  mv_ctx sc = {.axis = 1};
  check_forward("index_select of nothing", build_index_select, &sc, 2, sin, NULL, 0, 0);

  /* index_add of nothing: x itself, and x still gets its gradient */
  tu_input ain[3] = {x23, no_idx, {.ndim = 2, .shape = {2, 0}, .data = x, .requires_grad = 1}};
  check_forward("index_add of nothing", build_index_add, &sc, 3, ain, x, 6, 0);
  tu_gradcheck("index_add of nothing", build_index_add, &sc, 3, ain, 1e-3, 1e-4, 1e-2);

  /* concat with an empty input */
  tu_input cin[2] = {x23, {.ndim = 2, .shape = {2, 0}, .data = x}};
  check_forward("concat with an empty input", build_concat2, &sc, 2, cin, x, 6, 0);

  /* padding an empty tensor gives only the fill */
  tu_input pin = {.ndim = 2, .shape = {0, 3}, .data = x};
  mv_ctx pc = {.pads = {1, 1, 0, 0}, .value = 4.0f};
  const float four[6] = {4, 4, 4, 4, 4, 4};
  check_forward("pad of an empty tensor", build_pad, &pc, 1, &pin, four, 6, 0);

  /* one_hot of no labels: [0, 4] */
  mv_ctx oc = {.classes = 4};
  check_forward("one_hot of nothing", build_one_hot, &oc, 1, &no_idx, NULL, 0, 0);
}

/* ---- errors -------------------------------------------------------------------------- */

static void expect_build_error(nb_graph *g, nb_tensor *t, nb_status st, const char *const *parts,
                               int n) {
  assert_null(t);
  assert_int_equal(nb_graph_status(g), st);
  const char *msg = nb_graph_error(g);
  for (int i = 0; i < n; i++)
    if (!strstr(msg, parts[i])) fail_msg("error '%s' should mention '%s'", msg, parts[i]);
}

static void test_build_errors(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, (int64_t[]){2, 3});
  nb_tensor *b = nb_input(g, "b", NB_F32, 2, (int64_t[]){3, 4});
  expect_build_error(g, nb_concat(g, 2, (nb_tensor *[]){a, b}, 1), NB_ERR_SHAPE,
                     (const char *[]){"concat", "[3, 4]", "[2, 3]"}, 3);
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 2, (int64_t[]){2, 3});
  b = nb_input(g, "b", NB_I64, 2, (int64_t[]){2, 3});
  expect_build_error(g, nb_concat(g, 2, (nb_tensor *[]){a, b}, 0), NB_ERR_DTYPE,
                     (const char *[]){"concat", "i64", "f32"}, 3);
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 2, (int64_t[]){2, 3});
  expect_build_error(g, nb_pad(g, a, (int64_t[]){0, 0, 1, -1}, 0.0f), NB_ERR_INVALID_ARG,
                     (const char *[]){"pad", "negative", "axis 1", "[2, 3]"}, 4);
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 2, (int64_t[]){2, 3});
  nb_tensor *fidx = nb_input(g, "i", NB_F32, 1, (int64_t[]){2});
  expect_build_error(g, nb_index_select(g, a, 0, fidx), NB_ERR_DTYPE,
                     (const char *[]){"index_select", "f32"}, 2);
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 2, (int64_t[]){2, 3});
  nb_tensor *idx2 = nb_input(g, "i", NB_I64, 2, (int64_t[]){2, 1});
  expect_build_error(g, nb_index_select(g, a, 1, idx2), NB_ERR_SHAPE,
                     (const char *[]){"index_select", "1-d", "[2, 1]"}, 3);
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 2, (int64_t[]){2, 3});
  nb_tensor *idx = nb_input(g, "i", NB_I32, 1, (int64_t[]){4});
  nb_tensor *src = nb_input(g, "s", NB_F32, 2, (int64_t[]){3, 3});
  expect_build_error(g, nb_index_add(g, a, 0, idx, src), NB_ERR_SHAPE,
                     (const char *[]){"index_add", "[3, 3]", "[2, 3]", "4 indices"}, 4);
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 2, (int64_t[]){2, 3});
  expect_build_error(g, nb_one_hot(g, a, 3), NB_ERR_DTYPE, (const char *[]){"one_hot", "f32"}, 2);
  nb_graph_free(g);
}

/* Builds y = op(x, index) with x [10, 2] (one_hot: labels [index], 10
 * classes), runs it with the given index values and returns the status. */
enum { E_SELECT, E_ADD, E_ONE_HOT, E_EMBED };

static nb_status run_with_index(int op, nb_dtype dt, const int64_t *vals, int n, char *msg,
                                size_t cap) {
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){10, 2});
  nb_tensor *idx = nb_input(g, "idx", dt, 1, (int64_t[]){n});
  nb_tensor *y = NULL;
  switch (op) {
  case E_SELECT: y = nb_index_select(g, x, 0, idx); break;
  case E_ADD: {
    nb_tensor *src = nb_input(g, "src", NB_F32, 2, (int64_t[]){n, 2});
    y = nb_index_add(g, nb_broadcast_to(g, nb_scalar(g, 0.0f), 2, (int64_t[]){10, 2}), 0, idx, src);
    break;
  }
  case E_ONE_HOT: y = nb_one_hot(g, idx, 10); break;
  default: y = nb_embedding(g, x, idx); break;
  }
  if (!y) fail_msg("build failed: %s", nb_graph_error(g));
  nb_tensor_set_output(y);
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  float xv[20] = {0}, sv[64] = {0};
  int64_t iv64[16];
  int32_t iv32[16];
  assert_true(n <= 16);
  for (int i = 0; i < n; i++) {
    iv64[i] = vals[i];
    iv32[i] = (int32_t)vals[i];
  }
  const void *iv = dt == NB_I64 ? (const void *)iv64 : (const void *)iv32;
  for (int k = 0; k < nb_graph_node_count(g); k++) {
    nb_tensor *t = nb_graph_node(g, k);
    const char *name = nb_tensor_name(t);
    if (!strcmp(name, "x")) TU_OK(nb_plan_set_input(plan, t, xv, sizeof xv));
    if (!strcmp(name, "src")) TU_OK(nb_plan_set_input(plan, t, sv, (size_t)n * 2 * sizeof(float)));
  }
  TU_OK(nb_plan_set_input(plan, idx, iv, (size_t)n * nb_dtype_size(dt)));
  nb_status s = nb_plan_run(plan);
  snprintf(msg, cap, "%s", s ? nb_last_error() : "");
  nb_plan_free(plan);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
  return s;
}

static void expect_run_error(int op, nb_dtype dt, const int64_t *vals, int n, const char *part) {
  char msg[1024];
  nb_status s = run_with_index(op, dt, vals, n, msg, sizeof msg);
  if (s != NB_ERR_INVALID_ARG)
    fail_msg("expected an invalid-argument error with '%s', got %s", part, nb_status_name(s));
  if (!strstr(msg, part)) fail_msg("error '%s' should contain '%s'", msg, part);
}

static void test_run_errors(void **state) {
  (void)state;
  const int64_t ok[4] = {0, 9, 3, 9};
  char msg[1024];
  for (int op = E_SELECT; op <= E_EMBED; op++) {
    TU_OK(run_with_index(op, NB_I64, ok, 4, msg, sizeof msg));
    TU_OK(run_with_index(op, NB_I32, ok, 4, msg, sizeof msg));
  }
  const int64_t big[4] = {0, 1, 2, 12}, neg[3] = {5, -1, 2}, edge[2] = {10, 0};
  expect_run_error(E_SELECT, NB_I64, big, 4,
                   "index_select: index 12 at position 3 is out of range [0, 10) on axis 0");
  expect_run_error(E_SELECT, NB_I32, neg, 3,
                   "index_select: index -1 at position 1 is out of range [0, 10) on axis 0");
  expect_run_error(E_SELECT, NB_I64, edge, 2, "index_select: index 10 at position 0");
  expect_run_error(E_ADD, NB_I64, big, 4,
                   "index_add: index 12 at position 3 is out of range [0, 10) on axis 0");
  expect_run_error(E_ADD, NB_I32, neg, 3, "index_add: index -1 at position 1");
  expect_run_error(E_ONE_HOT, NB_I64, big, 4,
                   "one_hot: label 12 at position 3 is out of range [0, 10)");
  expect_run_error(E_ONE_HOT, NB_I32, neg, 3, "one_hot: label -1 at position 1");
  expect_run_error(E_EMBED, NB_I64, edge, 2, "index_select: index 10 at position 0");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_torch_ref),          cmocka_unit_test(test_concat_strided),
      cmocka_unit_test(test_pad_strided),        cmocka_unit_test(test_index_select_strided),
      cmocka_unit_test(test_index_add_strided),  cmocka_unit_test(test_one_hot_strided),
      cmocka_unit_test(test_one_hot_u8),         cmocka_unit_test(test_slice_step2_gradcheck),
      cmocka_unit_test(test_movement_gradcheck), cmocka_unit_test(test_movement_dtypes),
      cmocka_unit_test(test_movement_large),     cmocka_unit_test(test_movement_empty),
      cmocka_unit_test(test_build_errors),       cmocka_unit_test(test_run_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
