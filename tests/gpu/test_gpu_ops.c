/* Every op of the op table against the CPU backend, on cuda:0.
 *
 * For each op the CUDA backend supports, small graphs (several shapes each:
 * broadcasting, strided views, odd sizes, sizes past one thread block) are
 * built once, compiled for cpu and for cuda:0, fed the same random inputs,
 * and their outputs compared with per-dtype tolerances. Where an input takes
 * a gradient, loss = sum(y * R) with a fixed random R is differentiated
 * (nb_graph_backward) and every input gradient is compared too, which runs
 * the backward ops (conv and pool gradients, index_add, ...) and the fused
 * elementwise groups the compiler makes of them.
 *
 * Prints one line per op (PASS, FAIL with the worst element, UNSUPPORTED,
 * NOTEST when the backend has a kernel but this file no case) and a summary
 * "N ops passed, M failed, K unsupported, U without a test case". Exits 77
 * (skipped) without a GPU or a CUDA build, 1 if any case failed.
 *
 *   test_gpu_ops [OP...]     only the named ops */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/nabla.h"

#define SKIP_CODE 77
#define MAX_IN    6

typedef struct {
  int ndim;
  int64_t shape[NB_MAX_DIMS];
  nb_dtype dt; /* f32 unless set */
  float lo, hi;
  int grad;  /* requires grad */
  int round; /* f32 values rounded to integers (ties for eq/max/where) */
} in_spec;

typedef struct op_case op_case;
typedef nb_tensor *(*build_fn)(nb_graph *g, nb_tensor **x, const op_case *c);

struct op_case {
  const char *op;   /* the op-table (or composite) name it covers */
  const char *what; /* the variant, for messages */
  build_fn build;
  int n_in;
  in_spec in[MAX_IN];
  double atol, rtol; /* f32 tolerance: |gpu - cpu| <= atol + rtol |cpu| */
  int64_t ip[6];     /* builder parameters */
  float fp[2];
};

/* ---- builders ------------------------------------------------------------------------ */

typedef nb_tensor *(*bin_fn)(nb_graph *, nb_tensor *, nb_tensor *);
typedef nb_tensor *(*un_fn)(nb_graph *, nb_tensor *);

static const struct {
  const char *name;
  bin_fn f;
} binaries[] = {
    {"add", nb_add}, {"sub", nb_sub},         {"mul", nb_mul},         {"div", nb_div},
    {"pow", nb_pow}, {"maximum", nb_maximum}, {"minimum", nb_minimum}, {"eq", nb_eq},
    {"ne", nb_ne},   {"lt", nb_lt},           {"le", nb_le},           {"gt", nb_gt},
    {"ge", nb_ge},
};

static const struct {
  const char *name;
  un_fn f;
} unaries[] = {
    {"neg", nb_neg},     {"abs", nb_abs},       {"sign", nb_sign},
    {"exp", nb_exp},     {"log", nb_log},       {"sqrt", nb_sqrt},
    {"rsqrt", nb_rsqrt}, {"square", nb_square}, {"reciprocal", nb_reciprocal},
    {"tanh", nb_tanh},   {"erf", nb_erf},       {"sigmoid", nb_sigmoid},
    {"relu", nb_relu},   {"silu", nb_silu},
};

/* ip[0] = 1: the first input is read transposed (a strided view) */
static nb_tensor *maybe_t(nb_graph *g, nb_tensor *x, const op_case *c) {
  return c->ip[0] ? nb_transpose(g, x, 0, -1) : x;
}

static nb_tensor *b_binary(nb_graph *g, nb_tensor **x, const op_case *c) {
  for (size_t i = 0; i < sizeof binaries / sizeof binaries[0]; i++)
    if (!strcmp(binaries[i].name, c->op)) return binaries[i].f(g, maybe_t(g, x[0], c), x[1]);
  return NULL;
}

static nb_tensor *b_unary(nb_graph *g, nb_tensor **x, const op_case *c) {
  for (size_t i = 0; i < sizeof unaries / sizeof unaries[0]; i++)
    if (!strcmp(unaries[i].name, c->op)) return unaries[i].f(g, maybe_t(g, x[0], c));
  return NULL;
}

static nb_tensor *b_leaky(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_leaky_relu(g, x[0], c->fp[0]);
}
static nb_tensor *b_gelu(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_gelu(g, x[0], (int)c->ip[1]);
}
static nb_tensor *b_softplus(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_softplus(g, x[0], c->fp[0], c->fp[1]);
}
static nb_tensor *b_clamp(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_clamp(g, maybe_t(g, x[0], c), c->fp[0], c->fp[1]);
}
static nb_tensor *b_dropout(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_dropout(g, x[0], c->fp[0], (uint64_t)c->ip[1], 1);
}
static nb_tensor *b_where(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  return nb_where(g, x[0], x[1], x[2]);
}
/* ip[1] = target dtype; ip[2] = 1: then back to f32 */
static nb_tensor *b_cast(nb_graph *g, nb_tensor **x, const op_case *c) {
  nb_tensor *y = nb_cast(g, maybe_t(g, x[0], c), (nb_dtype)c->ip[1]);
  return c->ip[2] ? nb_cast(g, y, NB_F32) : y;
}
/* a long fused chain with broadcast inputs: the large group kernel */
static nb_tensor *b_chain(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  nb_tensor *y = nb_mul(g, x[0], x[1]);
  for (int i = 0; i < 6; i++) {
    y = nb_add(g, nb_tanh(g, y), nb_mul(g, x[2], nb_scalar(g, 0.5f + (float)i)));
    y = nb_sub(g, nb_sigmoid(g, y), nb_mul(g, x[3], x[1]));
    y = nb_maximum(g, y, nb_mul(g, x[0], nb_scalar(g, -0.25f)));
  }
  return nb_relu(g, y);
}

static nb_tensor *b_copy(nb_graph *g, nb_tensor **x, const op_case *c) {
  int perm[NB_MAX_DIMS];
  int n = nb_tensor_ndim(x[0]);
  for (int i = 0; i < n; i++) perm[i] = n - 1 - i;
  nb_tensor *v = c->ip[1] ? nb_slice(g, x[0], 1, 1, 100, 3) : nb_permute(g, x[0], perm);
  return nb_contiguous(g, v);
}
static nb_tensor *b_reshape(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  int64_t s[2] = {-1, 6};
  return nb_mul(g, nb_reshape(g, nb_transpose(g, x[0], 0, 1), 2, s), nb_scalar(g, 2.0f));
}
static nb_tensor *b_permute(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  int perm[4] = {2, 0, 3, 1};
  return nb_contiguous(g, nb_permute(g, x[0], perm));
}
/* ip[1] = axis, ip[2] = start, ip[3] = stop, ip[4] = step */
static nb_tensor *b_slice(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_contiguous(g, nb_slice(g, x[0], (int)c->ip[1], c->ip[2], c->ip[3], c->ip[4]));
}
static nb_tensor *b_broadcast(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  int64_t s[4] = {2, 3, 4, 5};
  return nb_contiguous(g, nb_broadcast_to(g, x[0], 4, s));
}
static nb_tensor *b_transpose(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  return nb_contiguous(g, nb_transpose(g, x[0], 0, 2));
}

/* ip[1] = axis mask (0 = all), ip[2] = keepdim */
static nb_tensor *b_reduce(nb_graph *g, nb_tensor **x, const op_case *c) {
  int axes[NB_MAX_DIMS], n = 0;
  for (int d = 0; d < NB_MAX_DIMS; d++)
    if ((c->ip[1] >> d) & 1) axes[n++] = d;
  nb_tensor *in = maybe_t(g, x[0], c);
  int keep = (int)c->ip[2];
  if (!strcmp(c->op, "sum")) return nb_sum(g, in, n, axes, keep);
  if (!strcmp(c->op, "max")) return nb_max(g, in, n, axes, keep);
  if (!strcmp(c->op, "min")) return nb_min(g, in, n, axes, keep);
  if (!strcmp(c->op, "mean")) return nb_mean(g, in, n, axes, keep);
  if (!strcmp(c->op, "var")) return nb_var(g, in, n, axes, 1, keep);
  if (!strcmp(c->op, "logsumexp")) return nb_logsumexp(g, in, n, axes, keep);
  return NULL;
}
static nb_tensor *b_argmax(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_argmax(g, maybe_t(g, x[0], c), (int)c->ip[1], (int)c->ip[2]);
}
static nb_tensor *b_concat(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_concat(g, (int)c->ip[2], x, (int)c->ip[1]);
}
static nb_tensor *b_pad(nb_graph *g, nb_tensor **x, const op_case *c) {
  int64_t pads[6] = {1, 2, 0, 0, 3, 1};
  return nb_pad(g, maybe_t(g, x[0], c), pads, c->fp[0]);
}
static nb_tensor *b_index_select(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_index_select(g, x[0], (int)c->ip[1], x[1]);
}
static nb_tensor *b_index_add(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_index_add(g, x[0], (int)c->ip[1], x[1], x[2]);
}
static nb_tensor *b_one_hot(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_one_hot(g, x[0], c->ip[1]);
}
static nb_tensor *b_embedding(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  return nb_embedding(g, x[0], x[1]);
}
/* ip[1] = 1: b read transposed (b given as [n, k]) */
static nb_tensor *b_matmul(nb_graph *g, nb_tensor **x, const op_case *c) {
  nb_tensor *b = c->ip[1] ? nb_transpose(g, x[1], -1, -2) : x[1];
  return nb_matmul(g, maybe_t(g, x[0], c), b);
}

static nb_conv2d_params conv_params(const op_case *c) {
  nb_conv2d_params p = nb_conv2d_defaults();
  p.stride[0] = p.stride[1] = c->ip[1] ? (int)c->ip[1] : 1;
  p.padding[0] = p.padding[1] = (int)c->ip[2];
  p.dilation[0] = p.dilation[1] = c->ip[3] ? (int)c->ip[3] : 1;
  p.groups = c->ip[4] ? (int)c->ip[4] : 1;
  return p;
}
static nb_tensor *b_conv(nb_graph *g, nb_tensor **x, const op_case *c) {
  nb_conv2d_params p = conv_params(c);
  return nb_conv2d(g, x[0], x[1], &p);
}
/* x[0] = dy, x[1] = w; the x shape follows from a forward conv of ip[5] */
static nb_tensor *b_conv_bwd_input(nb_graph *g, nb_tensor **x, const op_case *c) {
  nb_conv2d_params p = conv_params(c);
  int64_t xs[4] = {2, 4, 9, 9};
  return nb_conv2d_backward_input(g, x[0], x[1], xs, &p);
}
/* x[0] = x, x[1] = dy */
static nb_tensor *b_conv_bwd_weight(nb_graph *g, nb_tensor **x, const op_case *c) {
  nb_conv2d_params p = conv_params(c);
  int64_t ws[4] = {5, 4, 3, 3};
  return nb_conv2d_backward_weight(g, x[0], x[1], ws, &p);
}
/* ip[1] = kernel, ip[2] = stride, ip[3] = padding, ip[4] = ceil_mode,
 * ip[5] = count_include_pad; fp[0] != 0: average */
static nb_tensor *b_pool(nb_graph *g, nb_tensor **x, const op_case *c) {
  nb_pool2d_params p = nb_pool2d_defaults((int)c->ip[1], (int)c->ip[1]);
  p.stride[0] = p.stride[1] = (int)c->ip[2];
  p.padding[0] = p.padding[1] = (int)c->ip[3];
  p.ceil_mode = (int)c->ip[4];
  p.count_include_pad = (int)c->ip[5];
  return c->fp[0] != 0.0f ? nb_avg_pool2d(g, x[0], &p) : nb_max_pool2d(g, x[0], &p);
}
static nb_tensor *b_global_avg(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  return nb_global_avg_pool2d(g, x[0]);
}
static nb_tensor *b_softmax(nb_graph *g, nb_tensor **x, const op_case *c) {
  nb_tensor *in = maybe_t(g, x[0], c);
  return !strcmp(c->op, "softmax") ? nb_softmax(g, in, (int)c->ip[1])
                                   : nb_log_softmax(g, in, (int)c->ip[1]);
}
static nb_tensor *b_attention(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_attention(g, x[0], x[1], x[2], (int)c->ip[1], 0.0f);
}
static nb_tensor *b_batch_norm(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  int64_t ch = nb_tensor_shape(x[0])[1];
  nb_init zeros = {NB_INIT_ZEROS, 0, 0, 0}, ones = {NB_INIT_CONSTANT, 1, 0, 0};
  nb_tensor *rm = nb_variable(g, "bn.running_mean", NB_F32, 1, &ch, zeros);
  nb_tensor *rv = nb_variable(g, "bn.running_var", NB_F32, 1, &ch, ones);
  return nb_batch_norm(g, x[0], x[1], x[2], rm, rv, 1, 0.1f, 1e-5f);
}
static nb_tensor *b_layer_norm(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  return nb_layer_norm(g, x[0], 1, x[1], x[2], 1e-5f);
}
static nb_tensor *b_loss(nb_graph *g, nb_tensor **x, const op_case *c) {
  if (!strcmp(c->op, "cross_entropy")) return nb_cross_entropy(g, x[0], x[1], c->fp[0]);
  if (!strcmp(c->op, "nll_loss")) return nb_nll_loss(g, nb_log_softmax(g, x[0], 1), x[1]);
  if (!strcmp(c->op, "mse_loss")) return nb_mse_loss(g, x[0], x[1]);
  return nb_bce_with_logits(g, x[0], x[1]);
}
/* variable v += x, read back from the state after the run */
static nb_tensor *b_assign(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  nb_init init = {NB_INIT_NORMAL, 0, 1, 5};
  nb_tensor *v = nb_variable(g, "v", NB_F32, nb_tensor_ndim(x[0]), nb_tensor_shape(x[0]), init);
  nb_assign(g, v, nb_add(g, v, nb_mul(g, x[0], nb_scalar(g, 3.0f))));
  return nb_mul(g, v, nb_scalar(g, 1.0f)); /* reads the old value */
}

/* KV-cache decoding: x[0] is the value / input, the last x the position */
static nb_tensor *b_write_at(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  int64_t shape[3] = {2, 8, 3};
  nb_init init = {NB_INIT_NORMAL, 0, 1, 9};
  nb_tensor *cache = nb_variable(g, "cache", NB_F32, 3, shape, init);
  return nb_add(g, nb_write_at(g, cache, x[0], 1, x[1]), nb_scalar(g, 0.0f));
}
static nb_tensor *b_slice_at(nb_graph *g, nb_tensor **x, const op_case *c) {
  return nb_slice_at(g, x[0], 1, x[1], c->ip[1]);
}
static nb_tensor *b_attention_cached(nb_graph *g, nb_tensor **x, const op_case *c) {
  (void)c;
  return nb_mul(g, nb_attention_cached(g, x[0], x[1], x[2], x[3], 0.0f), nb_scalar(g, 1.0f));
}

/* ---- the cases --------------------------------------------------------------------- */

#define IN1(a)                                                                                     \
  1, { a }
#define IN2(a, b)                                                                                  \
  2, { a, b }
#define IN3(a, b, c)                                                                               \
  3, { a, b, c }
#define FIN(nd, s0, s1, s2, s3, lo, hi, G)                                                         \
  { nd, {s0, s1, s2, s3}, NB_F32, lo, hi, G, 0 }
#define RIN(nd, s0, s1, s2, s3, lo, hi, G)                                                         \
  { nd, {s0, s1, s2, s3}, NB_F32, lo, hi, G, 1 }
#define IIN(nd, s0, s1, dt, lo, hi)                                                                \
  { nd, {s0, s1}, dt, lo, hi, 0, 0 }

#define TOL_EW   1e-5, 1e-4
#define TOL_RED  1e-4, 1e-4
#define TOL_MM   1e-4, 1e-3
#define TOL_CONV 1e-3, 1e-3

static const op_case fixed_cases[] = {
    {"leaky_relu",
     "[3,5,7] slope 0.1",
     b_leaky,
     IN1(FIN(3, 3, 5, 7, 0, -3, 3, 1)),
     TOL_EW,
     {0},
     {0.1f}},
    {"gelu", "exact [3,5,7]", b_gelu, IN1(FIN(3, 3, 5, 7, 0, -4, 4, 1)), TOL_EW, {0, 0}, {0}},
    {"gelu", "tanh [2049,3]", b_gelu, IN1(FIN(2, 2049, 3, 0, 0, -4, 4, 1)), TOL_EW, {0, 1}, {0}},
    {"gelu_backward",
     "via gelu exact",
     b_gelu,
     IN1(FIN(2, 33, 7, 0, 0, -4, 4, 1)),
     TOL_EW,
     {0, 0},
     {0}},
    {"gelu_backward",
     "via gelu tanh",
     b_gelu,
     IN1(FIN(2, 33, 7, 0, 0, -4, 4, 1)),
     TOL_EW,
     {0, 1},
     {0}},
    {"softplus",
     "beta 1 threshold 20",
     b_softplus,
     IN1(FIN(2, 31, 9, 0, 0, -30, 30, 1)),
     TOL_EW,
     {0},
     {1.0f, 20.0f}},
    {"softplus",
     "beta 2 threshold 1",
     b_softplus,
     IN1(FIN(2, 31, 9, 0, 0, -3, 3, 1)),
     TOL_EW,
     {0},
     {2.0f, 1.0f}},
    {"clamp", "[-0.5, 1]", b_clamp, IN1(FIN(3, 3, 5, 7, 0, -2, 2, 1)), TOL_EW, {0}, {-0.5f, 1.0f}},
    {"clamp", "transposed", b_clamp, IN1(FIN(2, 6, 11, 0, 0, -2, 2, 1)), TOL_EW, {1}, {-1, 0.5f}},
    {"dropout",
     "p 0.3 [64,33]",
     b_dropout,
     IN1(FIN(2, 64, 33, 0, 0, -2, 2, 1)),
     TOL_EW,
     {0, 7},
     {0.3f}},
    {"where",
     "[3,1,5] ? [1,4,5] : [3,4,1]",
     b_where,
     IN3(RIN(3, 3, 1, 5, 0, 0, 1, 0), FIN(3, 1, 4, 5, 0, -2, 2, 1), FIN(3, 3, 4, 1, 0, -2, 2, 1)),
     TOL_EW,
     {0},
     {0}},
    {"add",
     "long fused chains, 13 inputs",
     b_chain,
     4,
     {FIN(3, 5, 6, 7, 0, -2, 2, 1), FIN(3, 1, 6, 1, 0, -2, 2, 1), FIN(1, 7, 0, 0, 0, -1, 1, 1),
      FIN(3, 5, 1, 7, 0, -1, 1, 1)},
     TOL_EW,
     {0},
     {0}},

    {"cast",
     "f32 -> f16 -> f32",
     b_cast,
     IN1(FIN(2, 17, 9, 0, 0, -70000, 70000, 1)),
     TOL_EW,
     {0, NB_F16, 1},
     {0}},
    {"cast",
     "f32 -> bf16 -> f32",
     b_cast,
     IN1(FIN(2, 17, 9, 0, 0, -100, 100, 1)),
     TOL_EW,
     {0, NB_BF16, 1},
     {0}},
    {"cast",
     "f32 -> i32 (truncation)",
     b_cast,
     IN1(FIN(2, 17, 9, 0, 0, -300, 300, 0)),
     TOL_EW,
     {0, NB_I32, 0},
     {0}},
    {"cast",
     "transposed f32 -> u8 (saturation)",
     b_cast,
     IN1(FIN(2, 17, 9, 0, 0, -300, 300, 0)),
     TOL_EW,
     {1, NB_U8, 0},
     {0}},
    {"cast",
     "f32 -> i64",
     b_cast,
     IN1(FIN(2, 5, 9, 0, 0, -1e6f, 1e6f, 0)),
     TOL_EW,
     {0, NB_I64, 0},
     {0}},
    {"cast",
     "i64 -> f32",
     b_cast,
     IN1(IIN(2, 5, 9, NB_I64, -100000, 100000)),
     TOL_EW,
     {0, NB_F32, 0},
     {0}},
    {"cast",
     "i32 -> i64",
     b_cast,
     IN1(IIN(2, 5, 9, NB_I32, -1000, 1000)),
     TOL_EW,
     {0, NB_I64, 0},
     {0}},
    {"cast", "u8 -> f16", b_cast, IN1(IIN(1, 300, 0, NB_U8, 0, 256)), TOL_EW, {0, NB_F16, 0}, {0}},
    {"copy", "reversed axes [3,4,5]", b_copy, IN1(FIN(3, 3, 4, 5, 0, -1, 1, 1)), TOL_EW, {0}, {0}},
    {"copy",
     "step-3 slice of [7,100]",
     b_copy,
     IN1(FIN(2, 7, 100, 0, 0, -1, 1, 1)),
     TOL_EW,
     {0, 1},
     {0}},
    {"copy", "i64 reversed axes", b_copy, IN1(IIN(2, 6, 7, NB_I64, -50, 50)), TOL_EW, {0}, {0}},
    {"reshape",
     "of a transposed [4,3,2]",
     b_reshape,
     IN1(FIN(3, 4, 3, 2, 0, -1, 1, 1)),
     TOL_EW,
     {0},
     {0}},
    {"permute",
     "(2,0,3,1) of [2,3,4,5]",
     b_permute,
     IN1(FIN(4, 2, 3, 4, 5, -1, 1, 1)),
     TOL_EW,
     {0},
     {0}},
    {"slice",
     "axis 1 [2:7]",
     b_slice,
     IN1(FIN(3, 3, 9, 4, 0, -1, 1, 1)),
     TOL_EW,
     {0, 1, 2, 7, 1},
     {0}},
    {"slice",
     "axis 0 [1:9:3]",
     b_slice,
     IN1(FIN(2, 10, 4, 0, 0, -1, 1, 1)),
     TOL_EW,
     {0, 0, 1, 9, 3},
     {0}},
    {"broadcast_to",
     "[3,1,5] -> [2,3,4,5]",
     b_broadcast,
     IN1(FIN(3, 3, 1, 5, 0, -1, 1, 1)),
     TOL_EW,
     {0},
     {0}},
    {"transpose",
     "axes 0, 2 of [3,4,5]",
     b_transpose,
     IN1(FIN(3, 3, 4, 5, 0, -1, 1, 1)),
     TOL_EW,
     {0},
     {0}},
    {"contiguous", "reversed axes", b_copy, IN1(FIN(3, 2, 5, 3, 0, -1, 1, 1)), TOL_EW, {0}, {0}},

    {"sum", "all of [3,5,7]", b_reduce, IN1(FIN(3, 3, 5, 7, 0, -1, 1, 1)), TOL_RED, {0, 0}, {0}},
    {"sum",
     "axis 0 of [64,37]",
     b_reduce,
     IN1(FIN(2, 64, 37, 0, 0, -1, 1, 1)),
     TOL_RED,
     {0, 1},
     {0}},
    {"sum",
     "bias grad [4,3,5,6] -> [1,3,1,1]",
     b_reduce,
     IN1(FIN(4, 4, 3, 5, 6, -1, 1, 1)),
     TOL_RED,
     {0, 13, 1},
     {0}},
    {"sum",
     "last axis of [7,5000]",
     b_reduce,
     IN1(FIN(2, 7, 5000, 0, 0, -1, 1, 1)),
     TOL_RED,
     {0, 2},
     {0}},
    {"sum",
     "axis 0 of [9,4096] (thread per output)",
     b_reduce,
     IN1(FIN(2, 9, 4096, 0, 0, -1, 1, 1)),
     TOL_RED,
     {0, 1},
     {0}},
    {"sum",
     "transposed, axis 1",
     b_reduce,
     IN1(FIN(2, 11, 13, 0, 0, -1, 1, 1)),
     TOL_RED,
     {1, 2, 1},
     {0}},
    {"sum",
     "all of [300000]",
     b_reduce,
     IN1(FIN(1, 300000, 0, 0, 0, -1, 1, 1)),
     1e-3,
     1e-4,
     {0, 0},
     {0}},
    {"max", "axis 1 of [6,9,5]", b_reduce, IN1(FIN(3, 6, 9, 5, 0, -1, 1, 1)), TOL_RED, {0, 2}, {0}},
    {"max", "all, ties", b_reduce, IN1(RIN(2, 7, 8, 0, 0, -2, 2, 1)), TOL_RED, {0, 0}, {0}},
    {"min",
     "axes 0,2 keepdim",
     b_reduce,
     IN1(FIN(3, 6, 9, 5, 0, -1, 1, 1)),
     TOL_RED,
     {0, 5, 1},
     {0}},
    {"min",
     "transposed, axis 0",
     b_reduce,
     IN1(FIN(2, 40, 33, 0, 0, -1, 1, 1)),
     TOL_RED,
     {1, 1},
     {0}},
    {"argmax",
     "axis 1 of [13,37]",
     b_argmax,
     IN1(FIN(2, 13, 37, 0, 0, -1, 1, 0)),
     TOL_RED,
     {0, 1},
     {0}},
    {"argmax",
     "axis 0 keepdim, ties",
     b_argmax,
     IN1(RIN(2, 9, 40, 0, 0, -2, 2, 0)),
     TOL_RED,
     {0, 0, 1},
     {0}},
    {"argmax",
     "transposed, axis 1",
     b_argmax,
     IN1(FIN(2, 50, 3, 0, 0, -1, 1, 0)),
     TOL_RED,
     {1, 1},
     {0}},
    {"mean", "axes 0,2,3", b_reduce, IN1(FIN(4, 4, 3, 5, 6, -1, 1, 1)), TOL_RED, {0, 13}, {0}},
    {"var", "axis 1", b_reduce, IN1(FIN(2, 6, 50, 0, 0, -1, 1, 1)), TOL_RED, {0, 2}, {0}},
    {"logsumexp", "axis 1", b_reduce, IN1(FIN(2, 6, 50, 0, 0, -5, 5, 1)), TOL_RED, {0, 2}, {0}},

    {"concat",
     "axis 1 of three",
     b_concat,
     IN3(FIN(3, 2, 3, 4, 0, -1, 1, 1), FIN(3, 2, 1, 4, 0, -1, 1, 1), FIN(3, 2, 5, 4, 0, -1, 1, 1)),
     TOL_EW,
     {0, 1, 3},
     {0}},
    {"concat",
     "axis 0 of two",
     b_concat,
     IN2(FIN(2, 3, 7, 0, 0, -1, 1, 1), FIN(2, 4, 7, 0, 0, -1, 1, 1)),
     TOL_EW,
     {0, 0, 2},
     {0}},
    {"concat",
     "i64 axis 1",
     b_concat,
     IN2(IIN(2, 3, 2, NB_I64, -9, 9), IIN(2, 3, 5, NB_I64, -9, 9)),
     TOL_EW,
     {0, 1, 2},
     {0}},
    {"pad",
     "f32 (1,2),(0,0),(3,1) with 0.5",
     b_pad,
     IN1(FIN(3, 3, 4, 5, 0, -1, 1, 1)),
     TOL_EW,
     {0},
     {0.5f}},
    {"pad", "transposed", b_pad, IN1(FIN(3, 5, 4, 3, 0, -1, 1, 1)), TOL_EW, {1}, {-2.0f}},
    {"index_select",
     "axis 0, i64 index",
     b_index_select,
     IN2(FIN(2, 10, 7, 0, 0, -1, 1, 1), IIN(1, 6, 0, NB_I64, 0, 10)),
     TOL_EW,
     {0, 0},
     {0}},
    {"index_select",
     "axis 1, i32 index with repeats",
     b_index_select,
     IN2(FIN(3, 4, 10, 3, 0, -1, 1, 1), IIN(1, 25, 0, NB_I32, 0, 10)),
     TOL_EW,
     {0, 1},
     {0}},
    {"index_add",
     "axis 0, duplicates",
     b_index_add,
     IN3(FIN(2, 10, 7, 0, 0, -1, 1, 1), IIN(1, 12, 0, NB_I64, 0, 10),
         FIN(2, 12, 7, 0, 0, -1, 1, 1)),
     TOL_EW,
     {0, 0},
     {0}},
    {"index_add",
     "axis 1, i32",
     b_index_add,
     IN3(FIN(2, 5, 6, 0, 0, -1, 1, 1), IIN(1, 9, 0, NB_I32, 0, 6), FIN(2, 5, 9, 0, 0, -1, 1, 1)),
     TOL_EW,
     {0, 1},
     {0}},
    {"one_hot",
     "i64 labels [17], 10 classes",
     b_one_hot,
     IN1(IIN(1, 17, 0, NB_I64, 0, 10)),
     TOL_EW,
     {0, 10},
     {0}},
    {"one_hot",
     "u8 labels [3,5], 4 classes",
     b_one_hot,
     IN1(IIN(2, 3, 5, NB_U8, 0, 4)),
     TOL_EW,
     {0, 4},
     {0}},
    {"embedding",
     "[11,6] by [3,4] ids",
     b_embedding,
     IN2(FIN(2, 11, 6, 0, 0, -1, 1, 1), IIN(2, 3, 4, NB_I64, 0, 11)),
     TOL_EW,
     {0},
     {0}},

    {"matmul",
     "[5,7] x [7,3]",
     b_matmul,
     IN2(FIN(2, 5, 7, 0, 0, -1, 1, 1), FIN(2, 7, 3, 0, 0, -1, 1, 1)),
     TOL_MM,
     {0},
     {0}},
    {"matmul",
     "batched [4,5,7] x [4,7,3]",
     b_matmul,
     IN2(FIN(3, 4, 5, 7, 0, -1, 1, 1), FIN(3, 4, 7, 3, 0, -1, 1, 1)),
     TOL_MM,
     {0},
     {0}},
    {"matmul",
     "[2,3,5,7] x [7,3] broadcast",
     b_matmul,
     IN2(FIN(4, 2, 3, 5, 7, -1, 1, 1), FIN(2, 7, 3, 0, 0, -1, 1, 1)),
     TOL_MM,
     {0},
     {0}},
    {"matmul",
     "[5,7] x [2,7,3] (a broadcast)",
     b_matmul,
     IN2(FIN(2, 5, 7, 0, 0, -1, 1, 1), FIN(3, 2, 7, 3, 0, -1, 1, 1)),
     TOL_MM,
     {0},
     {0}},
    {"matmul",
     "[2,1,5,7] x [3,7,3] (per-batch GEMMs)",
     b_matmul,
     IN2(FIN(4, 2, 1, 5, 7, -1, 1, 1), FIN(3, 3, 7, 3, 0, -1, 1, 1)),
     TOL_MM,
     {0},
     {0}},
    {"matmul",
     "transposed a and b",
     b_matmul,
     IN2(FIN(2, 7, 5, 0, 0, -1, 1, 1), FIN(2, 3, 7, 0, 0, -1, 1, 1)),
     TOL_MM,
     {1, 1},
     {0}},
    {"matmul",
     "vector [7] x [7,3]",
     b_matmul,
     IN2(FIN(1, 7, 0, 0, 0, -1, 1, 1), FIN(2, 7, 3, 0, 0, -1, 1, 1)),
     TOL_MM,
     {0},
     {0}},
    {"matmul",
     "[129,257] x [257,65]",
     b_matmul,
     IN2(FIN(2, 129, 257, 0, 0, -1, 1, 1), FIN(2, 257, 65, 0, 0, -1, 1, 1)),
     TOL_MM,
     {0},
     {0}},

    {"conv2d",
     "[2,3,9,9] * [4,3,3,3]",
     b_conv,
     IN2(FIN(4, 2, 3, 9, 9, -1, 1, 1), FIN(4, 4, 3, 3, 3, -1, 1, 1)),
     TOL_CONV,
     {0},
     {0}},
    {"conv2d",
     "stride 2 padding 1",
     b_conv,
     IN2(FIN(4, 2, 3, 10, 9, -1, 1, 1), FIN(4, 5, 3, 3, 3, -1, 1, 1)),
     TOL_CONV,
     {0, 2, 1},
     {0}},
    {"conv2d",
     "dilation 2 padding 2",
     b_conv,
     IN2(FIN(4, 1, 2, 11, 11, -1, 1, 1), FIN(4, 3, 2, 3, 3, -1, 1, 1)),
     TOL_CONV,
     {0, 1, 2, 2},
     {0}},
    {"conv2d",
     "groups 2",
     b_conv,
     IN2(FIN(4, 2, 4, 8, 8, -1, 1, 1), FIN(4, 6, 2, 3, 3, -1, 1, 1)),
     TOL_CONV,
     {0, 1, 1, 1, 2},
     {0}},
    {"conv2d",
     "1x1",
     b_conv,
     IN2(FIN(4, 3, 8, 5, 5, -1, 1, 1), FIN(4, 4, 8, 1, 1, -1, 1, 1)),
     TOL_CONV,
     {0},
     {0}},
    {"conv2d",
     "MNIST conv1 [16,1,28,28] * [32,1,3,3]",
     b_conv,
     IN2(FIN(4, 16, 1, 28, 28, -1, 1, 1), FIN(4, 32, 1, 3, 3, -1, 1, 1)),
     TOL_CONV,
     {0},
     {0}},
    {"conv2d_backward_input",
     "stride 2 padding 1 (transposed conv)",
     b_conv_bwd_input,
     IN2(FIN(4, 2, 5, 5, 5, -1, 1, 1), FIN(4, 5, 4, 3, 3, -1, 1, 1)),
     TOL_CONV,
     {0, 2, 1},
     {0}},
    {"conv2d_backward_weight",
     "stride 2 padding 1",
     b_conv_bwd_weight,
     IN2(FIN(4, 2, 4, 9, 9, -1, 1, 1), FIN(4, 2, 5, 5, 5, -1, 1, 1)),
     TOL_CONV,
     {0, 2, 1},
     {0}},

    {"max_pool2d",
     "2x2 [2,3,8,8]",
     b_pool,
     IN1(FIN(4, 2, 3, 8, 8, -1, 1, 1)),
     TOL_EW,
     {0, 2, 2, 0, 0, 1},
     {0}},
    {"max_pool2d",
     "3x3 stride 2 pad 1 ceil",
     b_pool,
     IN1(FIN(4, 2, 3, 9, 10, -1, 1, 1)),
     TOL_EW,
     {0, 3, 2, 1, 1, 1},
     {0}},
    {"max_pool2d",
     "2x2 with ties",
     b_pool,
     IN1(RIN(4, 1, 2, 6, 6, -2, 2, 1)),
     TOL_EW,
     {0, 2, 2, 0, 0, 1},
     {0}},
    {"max_pool2d_backward",
     "3x3 stride 1 (overlapping)",
     b_pool,
     IN1(FIN(4, 2, 2, 7, 7, -1, 1, 1)),
     TOL_EW,
     {0, 3, 1, 1, 0, 1},
     {0}},
    {"avg_pool2d",
     "3x3 stride 2 pad 1, count_include_pad",
     b_pool,
     IN1(FIN(4, 2, 3, 9, 10, -1, 1, 1)),
     TOL_EW,
     {0, 3, 2, 1, 0, 1},
     {1}},
    {"avg_pool2d",
     "3x3 stride 2 pad 1 ceil, exclude pad",
     b_pool,
     IN1(FIN(4, 2, 3, 9, 10, -1, 1, 1)),
     TOL_EW,
     {0, 3, 2, 1, 1, 0},
     {1}},
    {"avg_pool2d_backward",
     "2x2",
     b_pool,
     IN1(FIN(4, 2, 3, 8, 8, -1, 1, 1)),
     TOL_EW,
     {0, 2, 2, 0, 0, 1},
     {1}},
    {"global_avg_pool2d",
     "[2,5,6,7]",
     b_global_avg,
     IN1(FIN(4, 2, 5, 6, 7, -1, 1, 1)),
     TOL_RED,
     {0},
     {0}},

    {"softmax",
     "axis 1 of [7,10]",
     b_softmax,
     IN1(FIN(2, 7, 10, 0, 0, -5, 5, 1)),
     TOL_EW,
     {0, 1},
     {0}},
    {"softmax",
     "axis 1 of [3,5,4,2] (columns)",
     b_softmax,
     IN1(FIN(4, 3, 5, 4, 2, -5, 5, 1)),
     TOL_EW,
     {0, 1},
     {0}},
    {"softmax",
     "last axis of [4,3000] (block rows)",
     b_softmax,
     IN1(FIN(2, 4, 3000, 0, 0, -5, 5, 1)),
     TOL_EW,
     {0, 1},
     {0}},
    {"log_softmax",
     "axis 1 of [7,10]",
     b_softmax,
     IN1(FIN(2, 7, 10, 0, 0, -50, 50, 1)),
     TOL_EW,
     {0, 1},
     {0}},
    {"log_softmax",
     "axis 0 of [6,9] (columns)",
     b_softmax,
     IN1(FIN(2, 6, 9, 0, 0, -5, 5, 1)),
     TOL_EW,
     {0, 0},
     {0}},
    {"log_softmax",
     "transposed, axis 1",
     b_softmax,
     IN1(FIN(2, 9, 6, 0, 0, -5, 5, 1)),
     TOL_EW,
     {1, 1},
     {0}},

    {"attention",
     "q [2,3,5,8], k/v [2,3,7,8|6]",
     b_attention,
     IN3(FIN(4, 2, 3, 5, 8, -1, 1, 1), FIN(4, 2, 3, 7, 8, -1, 1, 1), FIN(4, 2, 3, 7, 6, -1, 1, 1)),
     TOL_MM,
     {0, 0},
     {0}},
    {"attention",
     "causal, 300 queries and keys",
     b_attention,
     IN3(FIN(4, 1, 2, 300, 16, -1, 1, 1), FIN(4, 1, 2, 300, 16, -1, 1, 1),
         FIN(4, 1, 2, 300, 16, -1, 1, 1)),
     TOL_MM,
     {0, 1},
     {0}},
    {"attention_backward",
     "causal, Tq 5 < Tk 7",
     b_attention,
     IN3(FIN(4, 2, 1, 5, 4, -2, 2, 1), FIN(4, 2, 1, 7, 4, -2, 2, 1), FIN(4, 2, 1, 7, 3, -2, 2, 1)),
     TOL_MM,
     {0, 1},
     {0}},

    {"write_at",
     "rows [2, 5) of axis 1 of a [2,8,3] cache",
     b_write_at,
     IN2(FIN(3, 2, 3, 3, 0, -1, 1, 0), IIN(0, 0, 0, NB_I64, 2, 3)),
     TOL_EW,
     {0},
     {0}},
    {"slice_at",
     "3 rows at pos 4 of axis 1, i32 pos",
     b_slice_at,
     IN2(FIN(3, 3, 10, 4, 0, -1, 1, 0), IIN(0, 0, 0, NB_I32, 4, 5)),
     TOL_EW,
     {0, 3},
     {0}},
    {"attention_cached",
     "3 queries at pos 4 of a 9-row cache",
     b_attention_cached,
     4,
     {FIN(4, 1, 2, 3, 8, -1, 1, 0), FIN(4, 1, 2, 9, 8, -1, 1, 0), FIN(4, 1, 2, 9, 5, -1, 1, 0),
      IIN(0, 0, 0, NB_I64, 4, 5)},
     TOL_MM,
     {0},
     {0}},

    {"batch_norm",
     "training [4,3,5,5]",
     b_batch_norm,
     IN3(FIN(4, 4, 3, 5, 5, -2, 2, 1), FIN(1, 3, 0, 0, 0, 0.5f, 1.5f, 1),
         FIN(1, 3, 0, 0, 0, -1, 1, 1)),
     TOL_RED,
     {0},
     {0}},
    {"layer_norm",
     "[6,32]",
     b_layer_norm,
     IN3(FIN(2, 6, 32, 0, 0, -2, 2, 1), FIN(1, 32, 0, 0, 0, 0.5f, 1.5f, 1),
         FIN(1, 32, 0, 0, 0, -1, 1, 1)),
     TOL_RED,
     {0},
     {0}},
    {"cross_entropy",
     "[8,10] smoothing 0.1",
     b_loss,
     IN2(FIN(2, 8, 10, 0, 0, -3, 3, 1), IIN(1, 8, 0, NB_I64, 0, 10)),
     TOL_RED,
     {0},
     {0.1f}},
    {"nll_loss",
     "[8,10]",
     b_loss,
     IN2(FIN(2, 8, 10, 0, 0, -3, 3, 1), IIN(1, 8, 0, NB_I64, 0, 10)),
     TOL_RED,
     {0},
     {0}},
    {"mse_loss",
     "[9,4]",
     b_loss,
     IN2(FIN(2, 9, 4, 0, 0, -3, 3, 1), FIN(2, 9, 4, 0, 0, -3, 3, 1)),
     TOL_RED,
     {0},
     {0}},
    {"bce_with_logits",
     "[9,4]",
     b_loss,
     IN2(FIN(2, 9, 4, 0, 0, -30, 30, 1), FIN(2, 9, 4, 0, 0, 0, 1, 0)),
     TOL_RED,
     {0},
     {0}},
    {"assign", "v += 3 x", b_assign, IN1(FIN(2, 5, 6, 0, 0, -1, 1, 0)), TOL_EW, {0}, {0}},
};

#define N_FIXED ((int)(sizeof fixed_cases / sizeof fixed_cases[0]))

/* Binary ops (input ranges, rounding for ties) and unary ops (range) get
 * the same variants each, generated below. */
static const struct {
  const char *name;
  float lo0, hi0, lo1, hi1;
  int round;
} binary_ranges[] = {
    {"add", -2, 2, -2, 2, 0},     {"sub", -2, 2, -2, 2, 0},   {"mul", -2, 2, -2, 2, 0},
    {"div", -2, 2, 0.5f, 2, 0},   {"pow", 0.5f, 2, -2, 2, 0}, {"maximum", -3, 3, -3, 3, 1},
    {"minimum", -3, 3, -3, 3, 1}, {"eq", -2, 2, -2, 2, 1},    {"ne", -2, 2, -2, 2, 1},
    {"lt", -2, 2, -2, 2, 1},      {"le", -2, 2, -2, 2, 1},    {"gt", -2, 2, -2, 2, 1},
    {"ge", -2, 2, -2, 2, 1},
};

static const struct {
  const char *name;
  float lo, hi;
} unary_ranges[] = {
    {"neg", -3, 3},          {"abs", -3, 3},     {"sign", -3, 3},     {"exp", -5, 5},
    {"log", 0.05f, 4},       {"sqrt", 0.05f, 4}, {"rsqrt", 0.05f, 4}, {"square", -3, 3},
    {"reciprocal", 0.2f, 3}, {"tanh", -4, 4},    {"erf", -3, 3},      {"sigmoid", -6, 6},
    {"relu", -3, 3},         {"silu", -5, 5},
};

static op_case *cases;
static int n_cases;

static in_spec f32_in(int ndim, int64_t s0, int64_t s1, int64_t s2, float lo, float hi, int round) {
  in_spec s = {ndim, {s0, s1, s2}, NB_F32, lo, hi, 1, round};
  return s;
}

/* fixed_cases plus four variants of every binary op (same shape, broadcast,
 * a transposed first input, a long odd size with a scalar) and three of
 * every unary op (plain, transposed, long). */
static int make_cases(void) {
  int nb = (int)(sizeof binary_ranges / sizeof binary_ranges[0]);
  int nu = (int)(sizeof unary_ranges / sizeof unary_ranges[0]);
  cases = calloc((size_t)(N_FIXED + 4 * nb + 3 * nu), sizeof *cases);
  if (!cases) return 1;
  for (int i = 0; i < nb; i++) {
    const char *name = binary_ranges[i].name;
    float a0 = binary_ranges[i].lo0, a1 = binary_ranges[i].hi0;
    float b0 = binary_ranges[i].lo1, b1 = binary_ranges[i].hi1;
    int r = binary_ranges[i].round;
    op_case c = {name, "", b_binary, 2, {{0}}, TOL_EW, {0}, {0}};
    c.what = "[3,5,7] x [3,5,7]";
    c.in[0] = f32_in(3, 3, 5, 7, a0, a1, r);
    c.in[1] = f32_in(3, 3, 5, 7, b0, b1, r);
    cases[n_cases++] = c;
    c.what = "[4,1,6] x [5,1] broadcast";
    c.in[0] = f32_in(3, 4, 1, 6, a0, a1, r);
    c.in[1] = f32_in(2, 5, 1, 0, b0, b1, r);
    cases[n_cases++] = c;
    c.what = "transposed [7,5] x [5,7]";
    c.in[0] = f32_in(2, 7, 5, 0, a0, a1, r);
    c.in[1] = f32_in(2, 5, 7, 0, b0, b1, r);
    c.ip[0] = 1;
    cases[n_cases++] = c;
    c.what = "[1001,37] x [] scalar";
    c.in[0] = f32_in(2, 1001, 37, 0, a0, a1, r);
    c.in[1] = f32_in(0, 0, 0, 0, b0, b1, r);
    c.ip[0] = 0;
    cases[n_cases++] = c;
  }
  for (int i = 0; i < nu; i++) {
    float lo = unary_ranges[i].lo, hi = unary_ranges[i].hi;
    op_case c = {unary_ranges[i].name, "[3,5,7]", b_unary, 1, {{0}}, TOL_EW, {0}, {0}};
    c.in[0] = f32_in(3, 3, 5, 7, lo, hi, 0);
    cases[n_cases++] = c;
    c.what = "transposed [9,4]";
    c.in[0] = f32_in(2, 9, 4, 0, lo, hi, 0);
    c.ip[0] = 1;
    cases[n_cases++] = c;
    c.what = "[2049,33]";
    c.in[0] = f32_in(2, 2049, 33, 0, lo, hi, 0);
    c.ip[0] = 0;
    cases[n_cases++] = c;
  }
  for (int i = 0; i < N_FIXED; i++) cases[n_cases++] = fixed_cases[i];
  return 0;
}

/* ---- running a case ---------------------------------------------------------------- */

typedef struct {
  void *data;
  size_t bytes;
  nb_dtype dt;
  int64_t numel;
} buf;

static void fill(const in_spec *s, uint64_t seed, buf *b) {
  b->dt = s->dt;
  b->numel = 1;
  for (int i = 0; i < s->ndim; i++) b->numel *= s->shape[i];
  b->bytes = (size_t)b->numel * nb_dtype_size(b->dt);
  b->data = calloc(b->bytes ? b->bytes : 1, 1);
  nb_rng r;
  nb_rng_seed(&r, seed);
  for (int64_t i = 0; i < b->numel; i++) {
    double u = s->lo + (s->hi - s->lo) * nb_rng_uniform(&r);
    switch (b->dt) {
    case NB_F32: ((float *)b->data)[i] = s->round ? (float)floor(u + 0.5) : (float)u; break;
    case NB_I32: ((int32_t *)b->data)[i] = (int32_t)floor(u); break;
    case NB_I64: ((int64_t *)b->data)[i] = (int64_t)floor(u); break;
    case NB_U8: ((uint8_t *)b->data)[i] = (uint8_t)floor(u); break;
    default: break;
    }
  }
}

/* The graph of a case: inputs, the op, and (with gradients) the loss. */
typedef struct {
  nb_graph *g;
  nb_tensor *x[MAX_IN], *y, *grad[MAX_IN];
  int has_var;
} case_graph;

static const char *build_graph(const op_case *c, case_graph *cg) {
  static char err[1024];
  memset(cg, 0, sizeof *cg);
  cg->g = nb_graph_new();
  int any_grad = 0;
  for (int i = 0; i < c->n_in; i++) {
    char name[16];
    snprintf(name, sizeof name, "x%d", i);
    cg->x[i] = nb_input(cg->g, name, c->in[i].dt, c->in[i].ndim, c->in[i].shape);
    if (c->in[i].grad && c->in[i].dt == NB_F32) {
      nb_tensor_set_requires_grad(cg->x[i], 1);
      any_grad = 1;
    }
  }
  cg->y = c->build(cg->g, cg->x, c);
  cg->has_var = c->build == b_assign || c->build == b_batch_norm;
  if (!cg->y || nb_graph_status(cg->g)) {
    snprintf(err, sizeof err, "graph: %s", nb_graph_error(cg->g));
    return err;
  }
  nb_tensor_set_output(cg->y);
  if (any_grad && nb_tensor_dtype(cg->y) == NB_F32) {
    /* loss = sum(y * R): every output element's gradient path counts */
    int64_t n = nb_tensor_numel(cg->y);
    float *r = malloc((size_t)(n ? n : 1) * sizeof *r);
    nb_rng rng;
    nb_rng_seed(&rng, 99);
    nb_rng_fill_uniform(&rng, r, (size_t)n, -1.0f, 1.0f);
    nb_tensor *R = nb_constant(cg->g, NB_F32, nb_tensor_ndim(cg->y), nb_tensor_shape(cg->y), r);
    free(r);
    nb_tensor *loss = nb_sum(cg->g, nb_mul(cg->g, cg->y, R), 0, NULL, 0);
    if (!loss || nb_graph_backward(cg->g, loss)) {
      snprintf(err, sizeof err, "backward: %s",
               nb_graph_error(cg->g)[0] ? nb_graph_error(cg->g) : nb_last_error());
      return err;
    }
    for (int i = 0; i < c->n_in; i++) {
      cg->grad[i] = c->in[i].grad ? nb_graph_grad(cg->g, cg->x[i]) : NULL;
      if (cg->grad[i]) nb_tensor_set_output(cg->grad[i]);
    }
  }
  return NULL;
}

/* Results of one backend: y, the input gradients, the variable (assign). */
typedef struct {
  buf y, grad[MAX_IN], var;
} results;

static void results_free(results *r) {
  free(r->y.data);
  free(r->var.data);
  for (int i = 0; i < MAX_IN; i++) free(r->grad[i].data);
  memset(r, 0, sizeof *r);
}

static int get(nb_plan *p, nb_tensor *t, buf *b) {
  b->dt = nb_tensor_dtype(t);
  b->numel = nb_tensor_numel(t);
  b->bytes = (size_t)b->numel * nb_dtype_size(b->dt);
  b->data = calloc(b->bytes ? b->bytes : 1, 1);
  return nb_plan_get(p, t, b->data, b->bytes) != NB_OK;
}

static const char *run_on(nb_backend *be, const op_case *c, case_graph *cg, const buf *in,
                          results *out) {
  static char err[1200];
  nb_state *st = NULL;
  nb_plan *p = NULL;
  memset(out, 0, sizeof *out);
  int bad = nb_state_new(be, &st) || nb_compile(cg->g, be, st, NULL, &p);
  for (int i = 0; !bad && i < c->n_in; i++)
    bad = nb_plan_set_input(p, cg->x[i], in[i].data, in[i].bytes) != NB_OK;
  if (!bad) bad = nb_plan_run(p) != NB_OK;
  if (!bad) bad = get(p, cg->y, &out->y);
  for (int i = 0; !bad && i < c->n_in; i++)
    if (cg->grad[i]) bad = get(p, cg->grad[i], &out->grad[i]);
  if (!bad && c->build == b_assign) {
    out->var.dt = NB_F32;
    out->var.numel = nb_tensor_numel(cg->x[0]);
    out->var.bytes = (size_t)out->var.numel * sizeof(float);
    out->var.data = calloc(out->var.bytes, 1);
    bad = nb_state_read(st, "v", out->var.data, out->var.bytes) != NB_OK;
  }
  if (bad) snprintf(err, sizeof err, "%s: %s", nb_backend_name(be), nb_last_error());
  nb_plan_free(p);
  nb_state_free(st);
  return bad ? err : NULL;
}

static double as_double(const buf *b, int64_t i) {
  switch (b->dt) {
  case NB_F32: return ((const float *)b->data)[i];
  case NB_F16: return nb_f16_to_f32(((const uint16_t *)b->data)[i]);
  case NB_BF16: return nb_bf16_to_f32(((const uint16_t *)b->data)[i]);
  case NB_I32: return ((const int32_t *)b->data)[i];
  case NB_I64: return (double)((const int64_t *)b->data)[i];
  case NB_U8: return ((const uint8_t *)b->data)[i];
  default: return 0;
  }
}

/* 0 if gpu matches cpu; else 1 and a message with the worst element.
 * Floats: |gpu - cpu| <= atol + rtol |cpu| (NaN equals NaN); integers and
 * half types (exact conversions of f32 values both sides computed) exactly. */
static int compare(const char *what, const buf *cpu, const buf *gpu, double atol, double rtol,
                   char *msg, size_t cap) {
  if (cpu->numel != gpu->numel || cpu->dt != gpu->dt) {
    snprintf(msg, cap, "%s: %lld %s elements on cpu, %lld %s on cuda", what, (long long)cpu->numel,
             nb_dtype_name(cpu->dt), (long long)gpu->numel, nb_dtype_name(gpu->dt));
    return 1;
  }
  int exact = cpu->dt != NB_F32;
  double worst = 0;
  int64_t at = -1;
  for (int64_t i = 0; i < cpu->numel; i++) {
    double a = as_double(cpu, i), b = as_double(gpu, i);
    if (a != a && b != b) continue;
    double tol = exact ? 0 : atol + rtol * fabs(a);
    double d = (a == b) ? 0 : fabs(a - b);
    if (d != d) d = INFINITY;
    if (d > tol && (at < 0 || d - tol > worst)) {
      worst = d - tol;
      at = i;
    }
  }
  if (at < 0) return 0;
  snprintf(msg, cap, "%s[%lld]: cpu %.9g, cuda %.9g (|diff| %.3g, atol %.1g, rtol %.1g)", what,
           (long long)at, as_double(cpu, at), as_double(gpu, at),
           fabs(as_double(cpu, at) - as_double(gpu, at)), exact ? 0.0 : atol, exact ? 0.0 : rtol);
  return 1;
}

/* Runs one case on both backends: 0 = pass, 1 = fail (msg says why). */
static int run_case(nb_backend *cpu, nb_backend *gpu, const op_case *c, char *msg, size_t cap) {
  case_graph cg;
  const char *err = build_graph(c, &cg);
  if (err) {
    snprintf(msg, cap, "%s", err);
    nb_graph_free(cg.g);
    return 1;
  }
  buf in[MAX_IN];
  memset(in, 0, sizeof in);
  for (int i = 0; i < c->n_in; i++) fill(&c->in[i], 1000u + 17u * (uint64_t)i, &in[i]);
  results rc, rg;
  int fail = 0;
  err = run_on(cpu, c, &cg, in, &rc);
  if (!err)
    err = run_on(gpu, c, &cg, in, &rg);
  else
    memset(&rg, 0, sizeof rg);
  if (err) {
    snprintf(msg, cap, "%s", err);
    fail = 1;
  }
  if (!fail) fail = compare("y", &rc.y, &rg.y, c->atol, c->rtol, msg, cap);
  for (int i = 0; !fail && i < c->n_in; i++) {
    if (!cg.grad[i]) continue;
    char what[32];
    snprintf(what, sizeof what, "grad x%d", i);
    /* gradients add more terms: a little more room */
    fail = compare(what, &rc.grad[i], &rg.grad[i], 2 * c->atol, 2 * c->rtol, msg, cap);
  }
  if (!fail && c->build == b_assign)
    fail = compare("v", &rc.var, &rg.var, c->atol, c->rtol, msg, cap);
  results_free(&rc);
  results_free(&rg);
  for (int i = 0; i < c->n_in; i++) free(in[i].data);
  nb_graph_free(cg.g);
  return fail;
}

static int wanted(const char *op, int argc, char **argv) {
  if (argc < 2) return 1;
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], op)) return 1;
  return 0;
}

int main(int argc, char **argv) {
  nb_backend *gpu = NULL, *cpu = NULL;
  if (nb_backend_new("cuda:0", &gpu) != NB_OK) {
    printf("SKIPPED: %s\n", nb_last_error());
    return SKIP_CODE;
  }
  if (nb_backend_new("cpu", &cpu) != NB_OK) {
    printf("cannot open the cpu backend: %s\n", nb_last_error());
    return 1;
  }
  if (make_cases()) {
    printf("out of memory\n");
    return 1;
  }
  printf("op-by-op check of %s against cpu (%d cases)\n", nb_backend_name(gpu), n_cases);
  int passed = 0, failed = 0, unsupported = 0, untested = 0, leaves = 0;
  int n_ops = nb_op_count();
  for (int i = 0; i < n_ops; i++) {
    nb_op_info info = nb_op_get_info(i);
    if (!wanted(info.name, argc, argv)) continue;
    if (!strcmp(info.fusion, "leaf")) {
      leaves++;
      continue; /* storage, not kernels: every case uses them */
    }
    int kernel = !info.composite && strcmp(info.fusion, "view") != 0;
    /* views need no kernel; a composite runs where its parts do (its cases
     * show it), so both count as supported in a CUDA build */
    int ok = kernel ? nb_backend_supports_op(gpu, info.name)
                    : nb_backend_kind_supports_op("cuda", info.composite ? "reshape" : info.name);
    if (!ok) {
      printf("%-24s UNSUPPORTED\n", info.name);
      unsupported++;
      continue;
    }
    int n = 0, bad = 0;
    char msg[1400] = "";
    for (int k = 0; k < n_cases; k++) {
      if (strcmp(cases[k].op, info.name)) continue;
      n++;
      char m[1300];
      if (run_case(cpu, gpu, &cases[k], m, sizeof m)) {
        if (!bad) snprintf(msg, sizeof msg, "%s: %s", cases[k].what, m);
        bad++;
      }
    }
    if (n == 0) {
      printf(
          "%-24s NOTEST (the CUDA backend has a kernel; add a case to tests/gpu/test_gpu_ops.c)\n",
          info.name);
      untested++;
    } else if (bad) {
      printf("%-24s FAIL %d of %d cases; first: %s\n", info.name, bad, n, msg);
      failed++;
    } else {
      printf("%-24s PASS (%d case%s)\n", info.name, n, n == 1 ? "" : "s");
      passed++;
    }
  }
  printf("%d ops passed, %d failed, %d unsupported, %d without a test case (%d leaves skipped)\n",
         passed, failed, unsupported, untested, leaves);
  nb_backend_free(cpu);
  nb_backend_free(gpu);
  free(cases);
  return failed ? 1 : 0;
}
