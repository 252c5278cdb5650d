/* 2-D convolution (NCHW, grouped, strided, dilated) and 2-D pooling, with
 * their gradient ops. Param layout in ip[]:
 *   conv:  stride h,w | padding h,w | dilation h,w | groups | x shape (4) | w shape (4)
 *   pool:  kernel h,w | stride h,w | padding h,w | ceil_mode | count_include_pad | x shape (4) */
#include "graph_internal.h"

enum { CV_STRIDE = 0, CV_PAD = 2, CV_DIL = 4, CV_GROUPS = 6, CV_X = 7, CV_W = 11, CV_N = 15 };
enum { PL_K = 0, PL_STRIDE = 2, PL_PAD = 4, PL_CEIL = 6, PL_COUNT_PAD = 7, PL_X = 8, PL_N = 12 };

nb_conv2d_params nb_conv2d_defaults(void) {
  nb_conv2d_params p = {{1, 1}, {0, 0}, {1, 1}, 1};
  return p;
}

nb_pool2d_params nb_pool2d_defaults(int kh, int kw) {
  nb_pool2d_params p = {{kh, kw}, {kh, kw}, {0, 0}, 0, 1};
  return p;
}

/* Floor division (PyTorch's div_rtn): C's truncation would turn a window
 * that overhangs the input by less than a stride into one output. */
static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return floor_div(in + 2 * p - d * (k - 1) - 1, s) + 1;
}

static nb_status check_f32_rank4(const nb_tensor *x, const char *what) {
  char s[128];
  if (x->dtype != NB_F32)
    return nb_error(NB_ERR_DTYPE, "%s has dtype %s, expected f32", what, nb_dtype_name(x->dtype));
  if (x->ndim != 4)
    return nb_error(NB_ERR_SHAPE, "%s must be 4-d [N, C, H, W], got %s", what,
                    nb_shape_str(x->ndim, x->shape, s, sizeof s));
  return NB_OK;
}

/* Validates x and w shapes (stored in ip) and returns the output shape. */
static nb_status conv_shapes(const int64_t *ip, int64_t *y) {
  const int64_t *x = ip + CV_X, *w = ip + CV_W;
  int64_t groups = ip[CV_GROUPS];
  char s0[128], s1[128];
  for (int i = 0; i < 2; i++)
    if (ip[CV_STRIDE + i] <= 0 || ip[CV_PAD + i] < 0 || ip[CV_DIL + i] <= 0)
      return nb_error(NB_ERR_INVALID_ARG,
                      "stride (%lld, %lld) and dilation (%lld, %lld) must be > 0 and padding "
                      "(%lld, %lld) >= 0",
                      (long long)ip[CV_STRIDE], (long long)ip[CV_STRIDE + 1], (long long)ip[CV_DIL],
                      (long long)ip[CV_DIL + 1], (long long)ip[CV_PAD], (long long)ip[CV_PAD + 1]);
  /* x and w come from caller-given shapes in the backward constructors */
  for (int i = 0; i < 4; i++)
    if (x[i] < 0 || w[i] < 0)
      return nb_error(NB_ERR_SHAPE, "input %s or weight %s has a negative dimension",
                      nb_shape_str(4, x, s0, sizeof s0), nb_shape_str(4, w, s1, sizeof s1));
  if (groups <= 0 || x[1] % groups || w[0] % groups || w[1] * groups != x[1])
    return nb_error(NB_ERR_SHAPE,
                    "input %s and weight %s do not fit groups=%lld (need C = weight[1] * groups, "
                    "K divisible by groups)",
                    nb_shape_str(4, x, s0, sizeof s0), nb_shape_str(4, w, s1, sizeof s1),
                    (long long)groups);
  y[0] = x[0];
  y[1] = w[0];
  y[2] = conv_out(x[2], w[2], ip[CV_STRIDE], ip[CV_PAD], ip[CV_DIL]);
  y[3] = conv_out(x[3], w[3], ip[CV_STRIDE + 1], ip[CV_PAD + 1], ip[CV_DIL + 1]);
  if (y[2] <= 0 || y[3] <= 0)
    return nb_error(NB_ERR_SHAPE, "input %s is smaller than the dilated kernel %s with padding",
                    nb_shape_str(4, x, s0, sizeof s0), nb_shape_str(4, w, s1, sizeof s1));
  return NB_OK;
}

static void set4(nb_tensor *t, const int64_t *s) {
  t->dtype = NB_F32;
  t->ndim = 4;
  for (int i = 0; i < 4; i++) t->shape[i] = s[i];
}

/* Convolutions take two operands of one dtype: f32, or bf16 / f16
 * (autocast.c), accumulated in f32; the result is f32 either way. */
static nb_status check_conv_pair(const nb_tensor *t, const char *what0, const char *what1) {
  const nb_tensor *a = t->in[0], *b = t->in[1];
  char s[128];
  if (a->dtype != b->dtype || (a->dtype != NB_F32 && !nb_dtype_is_half(a->dtype)))
    return nb_error(NB_ERR_DTYPE, "%s and %s have dtypes %s and %s, expected both f32, bf16 or f16",
                    what0, what1, nb_dtype_name(a->dtype), nb_dtype_name(b->dtype));
  for (int i = 0; i < 2; i++)
    if (t->in[i]->ndim != 4)
      return nb_error(NB_ERR_SHAPE, "%s must be 4-d [N, C, H, W], got %s", i ? what1 : what0,
                      nb_shape_str(t->in[i]->ndim, t->in[i]->shape, s, sizeof s));
  return NB_OK;
}

static nb_status infer_conv(nb_tensor *t) {
  nb_status st = check_conv_pair(t, "input", "weight");
  if (st) return st;
  for (int i = 0; i < 4; i++) {
    t->ip[CV_X + i] = t->in[0]->shape[i];
    t->ip[CV_W + i] = t->in[1]->shape[i];
  }
  int64_t y[4];
  st = conv_shapes(t->ip, y);
  if (!st) set4(t, y);
  return st;
}

static nb_status same4(const nb_tensor *x, const int64_t *want, const char *what) {
  for (int i = 0; i < 4; i++)
    if (x->shape[i] != want[i]) {
      char s0[128], s1[128];
      return nb_error(NB_ERR_SHAPE, "%s has shape %s, expected %s", what,
                      nb_shape_str(4, x->shape, s0, sizeof s0),
                      nb_shape_str(4, want, s1, sizeof s1));
    }
  return NB_OK;
}

/* dy must have the shape conv2d(x, w) would produce; the message names all
 * three, since any of them may be the one the caller got wrong. */
static nb_status check_dy(const nb_tensor *dy, const int64_t *ip) {
  int64_t y[4];
  nb_status st = conv_shapes(ip, y);
  if (st) return st;
  for (int i = 0; i < 4; i++)
    if (dy->shape[i] != y[i]) {
      char s0[128], s1[128], s2[128], s3[128];
      return nb_error(NB_ERR_SHAPE, "dy has shape %s, expected %s for input %s and weight %s",
                      nb_shape_str(4, dy->shape, s0, sizeof s0), nb_shape_str(4, y, s1, sizeof s1),
                      nb_shape_str(4, ip + CV_X, s2, sizeof s2),
                      nb_shape_str(4, ip + CV_W, s3, sizeof s3));
    }
  return NB_OK;
}

/* in[0] = dy, in[1] = w; ip holds x and w shapes */
static nb_status infer_conv_bwd_input(nb_tensor *t) {
  nb_status st = check_conv_pair(t, "dy", "weight");
  if (!st) st = same4(t->in[1], t->ip + CV_W, "weight");
  if (!st) st = check_dy(t->in[0], t->ip);
  if (!st) set4(t, t->ip + CV_X);
  return st;
}

/* in[0] = x, in[1] = dy */
static nb_status infer_conv_bwd_weight(nb_tensor *t) {
  nb_status st = check_conv_pair(t, "input", "dy");
  if (!st) st = same4(t->in[0], t->ip + CV_X, "input");
  if (!st) st = check_dy(t->in[1], t->ip);
  if (!st) set4(t, t->ip + CV_W);
  return st;
}

static nb_tensor *conv_node(nb_graph *g, nb_opcode op, nb_tensor *a, nb_tensor *b,
                            const int64_t *ip) {
  nb_tensor *raw[2] = {a, b};
  if (!nb_check_inputs(g, op, 2, raw)) return NULL; /* name the conv, not the copy */
  nb_tensor *in[2] = {nb_contiguous(g, a), nb_contiguous(g, b)};
  return nb_node_new(g, op, 2, in, ip, CV_N, NULL, 0);
}

static nb_status bwd_conv(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *a = node->in[0], *b = node->in[1];
  /* half-precision operands: the gradient convolutions run in their dtype */
  gout = nb_autocast_grad(g, gout, a);
  switch (node->op) {
  case NB_OP_CONV2D: /* a = x, b = w */
    if (nb_needs_grad(a)) gin[0] = conv_node(g, NB_OP_CONV2D_BWD_INPUT, gout, b, node->ip);
    if (nb_needs_grad(b)) gin[1] = conv_node(g, NB_OP_CONV2D_BWD_WEIGHT, a, gout, node->ip);
    break;
  case NB_OP_CONV2D_BWD_INPUT: /* a = dy, b = w; output is x-shaped */
    if (nb_needs_grad(a)) gin[0] = conv_node(g, NB_OP_CONV2D, gout, b, node->ip);
    if (nb_needs_grad(b)) gin[1] = conv_node(g, NB_OP_CONV2D_BWD_WEIGHT, gout, a, node->ip);
    break;
  default: /* CONV2D_BWD_WEIGHT: a = x, b = dy; output is w-shaped */
    if (nb_needs_grad(a)) gin[0] = conv_node(g, NB_OP_CONV2D_BWD_INPUT, b, gout, node->ip);
    if (nb_needs_grad(b)) gin[1] = conv_node(g, NB_OP_CONV2D, a, gout, node->ip);
    break;
  }
  return NB_OK;
}

/* ---- pooling ------------------------------------------------------------------ */

static int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p, int ceil_mode) {
  int64_t span = in + 2 * p - k;
  int64_t o = floor_div(ceil_mode ? span + s - 1 : span, s) + 1;
  /* PyTorch: the last window must start inside the input or left padding */
  if (ceil_mode && (o - 1) * s >= in + p) o--;
  return o;
}

static nb_status pool_shape(const int64_t *ip, int64_t *y) {
  const int64_t *x = ip + PL_X;
  char s[128];
  for (int i = 0; i < 2; i++) {
    if (ip[PL_K + i] <= 0 || ip[PL_STRIDE + i] <= 0 || ip[PL_PAD + i] < 0)
      return nb_error(NB_ERR_INVALID_ARG,
                      "input %s: kernel (%lld, %lld) and stride (%lld, %lld) must be > 0 and "
                      "padding (%lld, %lld) >= 0",
                      nb_shape_str(4, x, s, sizeof s), (long long)ip[PL_K], (long long)ip[PL_K + 1],
                      (long long)ip[PL_STRIDE], (long long)ip[PL_STRIDE + 1], (long long)ip[PL_PAD],
                      (long long)ip[PL_PAD + 1]);
    /* PyTorch's rule; it also guarantees every window holds an input element */
    if (ip[PL_PAD + i] * 2 > ip[PL_K + i])
      return nb_error(NB_ERR_INVALID_ARG,
                      "input %s: padding %lld must be at most half the kernel %lld (dim %d)",
                      nb_shape_str(4, x, s, sizeof s), (long long)ip[PL_PAD + i],
                      (long long)ip[PL_K + i], 2 + i);
  }
  y[0] = x[0];
  y[1] = x[1];
  y[2] = pool_out(x[2], ip[PL_K], ip[PL_STRIDE], ip[PL_PAD], (int)ip[PL_CEIL]);
  y[3] = pool_out(x[3], ip[PL_K + 1], ip[PL_STRIDE + 1], ip[PL_PAD + 1], (int)ip[PL_CEIL]);
  if (x[0] < 0 || x[1] < 0 || x[2] <= 0 || x[3] <= 0 || y[2] <= 0 || y[3] <= 0)
    return nb_error(NB_ERR_SHAPE,
                    "input %s with padding (%lld, %lld) is smaller than the %lldx%lld window",
                    nb_shape_str(4, x, s, sizeof s), (long long)ip[PL_PAD],
                    (long long)ip[PL_PAD + 1], (long long)ip[PL_K], (long long)ip[PL_K + 1]);
  return NB_OK;
}

static nb_status infer_pool(nb_tensor *t) {
  nb_status st = check_f32_rank4(t->in[0], "input");
  if (st) return st;
  for (int i = 0; i < 4; i++) t->ip[PL_X + i] = t->in[0]->shape[i];
  int64_t y[4];
  st = pool_shape(t->ip, y);
  if (!st) set4(t, y);
  return st;
}

/* MAXPOOL2D_BWD: in[0] = x, in[1] = dy; AVGPOOL2D_BWD: in[0] = dy */
static nb_status infer_pool_bwd(nb_tensor *t) {
  const nb_tensor *dy = t->in[t->n_in - 1];
  nb_status st = check_f32_rank4(dy, "dy");
  if (!st && t->n_in == 2) st = same4(t->in[0], t->ip + PL_X, "input");
  int64_t y[4];
  if (!st) st = pool_shape(t->ip, y);
  if (!st) st = same4(dy, y, "dy");
  if (!st) set4(t, t->ip + PL_X);
  return st;
}

static nb_status bwd_maxpool(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *in[2] = {node->in[0], nb_contiguous(g, gout)};
  gin[0] = nb_node_new(g, NB_OP_MAXPOOL2D_BWD, 2, in, node->ip, PL_N, NULL, 0);
  return NB_OK;
}

static nb_status bwd_avgpool(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *dy = nb_contiguous(g, gout);
  gin[0] = nb_node_new(g, NB_OP_AVGPOOL2D_BWD, 1, &dy, node->ip, PL_N, NULL, 0);
  return NB_OK;
}

/* avg_pool2d_backward is linear in dy: its gradient is avg_pool2d itself. */
static nb_status bwd_avgpool_bwd(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *x = nb_contiguous(g, gout);
  gin[0] = nb_node_new(g, NB_OP_AVGPOOL2D, 1, &x, node->ip, PL_N, NULL, 0);
  return NB_OK;
}

void nb_register_ops_conv(nb_op_def *t) {
  t[NB_OP_CONV2D] = (nb_op_def){"conv2d", NB_FUSE_OPAQUE, infer_conv, bwd_conv};
  t[NB_OP_CONV2D_BWD_INPUT] =
      (nb_op_def){"conv2d_backward_input", NB_FUSE_OPAQUE, infer_conv_bwd_input, bwd_conv};
  t[NB_OP_CONV2D_BWD_WEIGHT] =
      (nb_op_def){"conv2d_backward_weight", NB_FUSE_OPAQUE, infer_conv_bwd_weight, bwd_conv};
  t[NB_OP_MAXPOOL2D] = (nb_op_def){"max_pool2d", NB_FUSE_OPAQUE, infer_pool, bwd_maxpool};
  t[NB_OP_MAXPOOL2D_BWD] = (nb_op_def){"max_pool2d_backward", NB_FUSE_OPAQUE, infer_pool_bwd, NULL};
  t[NB_OP_AVGPOOL2D] = (nb_op_def){"avg_pool2d", NB_FUSE_OPAQUE, infer_pool, bwd_avgpool};
  t[NB_OP_AVGPOOL2D_BWD] =
      (nb_op_def){"avg_pool2d_backward", NB_FUSE_OPAQUE, infer_pool_bwd, bwd_avgpool_bwd};
}

/* ---- constructors ---------------------------------------------------------------- */

static void conv_params(const nb_conv2d_params *p, int64_t *ip) {
  nb_conv2d_params d = p ? *p : nb_conv2d_defaults();
  for (int i = 0; i < 2; i++) {
    ip[CV_STRIDE + i] = d.stride[i];
    ip[CV_PAD + i] = d.padding[i];
    ip[CV_DIL + i] = d.dilation[i];
  }
  ip[CV_GROUPS] = d.groups;
}

nb_tensor *nb_conv2d(nb_graph *g, nb_tensor *x, nb_tensor *w, const nb_conv2d_params *p) {
  int64_t ip[CV_N] = {0};
  conv_params(p, ip);
  nb_tensor *raw[2] = {x, w};
  if (!nb_check_inputs(g, NB_OP_CONV2D, 2, raw)) return NULL;
  /* an autocast scope: half-precision operands */
  return conv_node(g, NB_OP_CONV2D, nb_autocast_operand(g, x), nb_autocast_operand(g, w), ip);
}

static int copy_shape4(nb_graph *g, const char *op, const int64_t *src, int64_t *dst) {
  if (!src) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "%s: shape is NULL", op));
    return 0;
  }
  for (int i = 0; i < 4; i++) dst[i] = src[i];
  return 1;
}

nb_tensor *nb_conv2d_backward_input(nb_graph *g, nb_tensor *dy, nb_tensor *w,
                                    const int64_t *x_shape, const nb_conv2d_params *p) {
  int64_t ip[CV_N] = {0};
  conv_params(p, ip);
  if (g && w && w->ndim == 4)
    for (int i = 0; i < 4; i++) ip[CV_W + i] = w->shape[i];
  if (g && !copy_shape4(g, "conv2d_backward_input", x_shape, ip + CV_X)) return NULL;
  nb_tensor *raw[2] = {dy, w};
  if (!nb_check_inputs(g, NB_OP_CONV2D_BWD_INPUT, 2, raw)) return NULL;
  return conv_node(g, NB_OP_CONV2D_BWD_INPUT, nb_autocast_operand(g, dy), nb_autocast_operand(g, w),
                   ip);
}

nb_tensor *nb_conv2d_backward_weight(nb_graph *g, nb_tensor *x, nb_tensor *dy,
                                     const int64_t *w_shape, const nb_conv2d_params *p) {
  int64_t ip[CV_N] = {0};
  conv_params(p, ip);
  /* the x shape is the input's own; without it infer would compare x with
   * an all-zero shape and reject every call */
  if (g && x && x->ndim == 4)
    for (int i = 0; i < 4; i++) ip[CV_X + i] = x->shape[i];
  if (g && !copy_shape4(g, "conv2d_backward_weight", w_shape, ip + CV_W)) return NULL;
  nb_tensor *raw[2] = {x, dy};
  if (!nb_check_inputs(g, NB_OP_CONV2D_BWD_WEIGHT, 2, raw)) return NULL;
  return conv_node(g, NB_OP_CONV2D_BWD_WEIGHT, nb_autocast_operand(g, x),
                   nb_autocast_operand(g, dy), ip);
}

static nb_tensor *pool(nb_graph *g, nb_opcode op, nb_tensor *x, const nb_pool2d_params *p) {
  if (!nb_check_inputs(g, op, 1, &x)) return NULL;
  if (!p) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "%s: params are NULL", nb_op_def_get(op)->name));
    return NULL;
  }
  int64_t ip[PL_N] = {0};
  if (p) {
    for (int i = 0; i < 2; i++) {
      ip[PL_K + i] = p->kernel[i];
      ip[PL_STRIDE + i] = p->stride[i] ? p->stride[i] : p->kernel[i];
      ip[PL_PAD + i] = p->padding[i];
    }
    ip[PL_CEIL] = p->ceil_mode ? 1 : 0;
    ip[PL_COUNT_PAD] = p->count_include_pad ? 1 : 0;
  }
  nb_tensor *xc = nb_contiguous(g, x);
  return nb_node_new(g, op, 1, &xc, ip, PL_N, NULL, 0);
}

nb_tensor *nb_max_pool2d(nb_graph *g, nb_tensor *x, const nb_pool2d_params *p) {
  return pool(g, NB_OP_MAXPOOL2D, x, p);
}

nb_tensor *nb_avg_pool2d(nb_graph *g, nb_tensor *x, const nb_pool2d_params *p) {
  return pool(g, NB_OP_AVGPOOL2D, x, p);
}

nb_tensor *nb_global_avg_pool2d(nb_graph *g, nb_tensor *x) {
  if (g && x && x->ndim != 4) {
    char s[128];
    nb_graph_fail(g, nb_error(NB_ERR_SHAPE, "global_avg_pool2d: input must be [N, C, H, W], got %s",
                              nb_shape_str(x->ndim, x->shape, s, sizeof s)));
    return NULL;
  }
  int axes[2] = {2, 3};
  return nb_mean(g, x, 2, axes, 1);
}
