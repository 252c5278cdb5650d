/* Neural-network ops: softmax and log_softmax (own kernels), and the
 * composites batch_norm, layer_norm and the losses. Composites get their
 * gradients from their parts, so they need no backward rule of their own. */
#include "graph_internal.h"

static nb_status infer_softmax(nb_tensor *t) {
  const nb_tensor *x = t->in[0];
  if (x->dtype != NB_F32)
    return nb_error(NB_ERR_DTYPE, "input has dtype %s, expected f32", nb_dtype_name(x->dtype));
  if (x->ndim == 0) return nb_error(NB_ERR_SHAPE, "input must have at least one dimension");
  t->dtype = NB_F32;
  t->ndim = x->ndim;
  for (int i = 0; i < x->ndim; i++) t->shape[i] = x->shape[i];
  return NB_OK;
}

static nb_status bwd_softmax(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  int axis = (int)node->ip[0];
  nb_tensor *y = node;
  if (node->op == NB_OP_SOFTMAX) {
    /* dx = y * (dy - sum(dy * y)) */
    nb_tensor *dot = nb_sum(g, nb_mul(g, gout, y), 1, &axis, 1);
    gin[0] = nb_mul(g, y, nb_sub(g, gout, dot));
  } else {
    /* dx = dy - exp(y) * sum(dy) */
    nb_tensor *s = nb_sum(g, gout, 1, &axis, 1);
    gin[0] = nb_sub(g, gout, nb_mul(g, nb_exp(g, y), s));
  }
  return NB_OK;
}

void nb_register_ops_nn(nb_op_def *t) {
  t[NB_OP_SOFTMAX] = (nb_op_def){"softmax", NB_FUSE_OPAQUE, infer_softmax, bwd_softmax};
  t[NB_OP_LOG_SOFTMAX] = (nb_op_def){"log_softmax", NB_FUSE_OPAQUE, infer_softmax, bwd_softmax};
}

static nb_tensor *softmax_node(nb_graph *g, nb_opcode op, nb_tensor *x, int axis) {
  if (!g || !x) return nb_node_new(g, op, 1, &x, NULL, 0, NULL, 0);
  int a = nb_norm_axis(axis, x->ndim);
  if (a < 0) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "%s: axis %d out of range for rank %d",
                              nb_op_def_get(op)->name, axis, x->ndim));
    return NULL;
  }
  int64_t ip = a;
  x = nb_contiguous(g, x);
  return nb_node_new(g, op, 1, &x, &ip, 1, NULL, 0);
}

nb_tensor *nb_softmax(nb_graph *g, nb_tensor *x, int axis) {
  return softmax_node(g, NB_OP_SOFTMAX, x, axis);
}

nb_tensor *nb_log_softmax(nb_graph *g, nb_tensor *x, int axis) {
  return softmax_node(g, NB_OP_LOG_SOFTMAX, x, axis);
}

/* ---- normalisation ---------------------------------------------------------- */

static nb_tensor *channel_view(nb_graph *g, nb_tensor *v, const nb_tensor *x) {
  /* [C] -> [1, C, 1, ...] so it broadcasts over [N, C, ...] */
  int64_t shape[NB_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) shape[i] = i == 1 ? x->shape[1] : 1;
  return nb_reshape(g, v, x->ndim, shape);
}

/* Composites check their own arguments, so that a NULL graph or tensor is
 * reported under their name: with `return NULL` alone the graph stayed OK
 * and the caller never learnt why, and the parts they are built from would
 * blame themselves. Returns 1 when every tensor is present. */
static int have_args(nb_graph *g, const char *op, int n, nb_tensor *const *t,
                     const char *const *names) {
  if (!g) {
    nb_error(NB_ERR_INVALID_ARG, "%s: graph is NULL", op);
    return 0;
  }
  for (int i = 0; i < n; i++) {
    if (t[i]) continue;
    if (g->status == NB_OK)
      nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "%s: %s is NULL", op, names[i]));
    return 0;
  }
  return 1;
}

static int check_channel_param(nb_graph *g, const nb_tensor *p, const nb_tensor *x,
                               const char *what) {
  if (!p) return 1;
  if (p->ndim != 1 || p->shape[0] != x->shape[1]) {
    char s0[128], s1[128];
    nb_graph_fail(
        g, nb_error(NB_ERR_SHAPE, "batch_norm: %s has shape %s, expected [%lld] for input %s", what,
                    nb_shape_str(p->ndim, p->shape, s0, sizeof s0), (long long)x->shape[1],
                    nb_shape_str(x->ndim, x->shape, s1, sizeof s1)));
    return 0;
  }
  return 1;
}

nb_tensor *nb_batch_norm(nb_graph *g, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta,
                         nb_tensor *running_mean, nb_tensor *running_var, int training,
                         float momentum, float eps) {
  if (!have_args(g, "batch_norm", 1, &x, (const char *const[]){"input x"})) return NULL;
  if (x->ndim < 2) {
    nb_graph_fail(
        g, nb_error(NB_ERR_SHAPE, "batch_norm: input must be [N, C, ...], got rank %d", x->ndim));
    return NULL;
  }
  if (!check_channel_param(g, gamma, x, "gamma") || !check_channel_param(g, beta, x, "beta") ||
      !check_channel_param(g, running_mean, x, "running_mean") ||
      !check_channel_param(g, running_var, x, "running_var"))
    return NULL;
  int axes[NB_MAX_DIMS], n = 0;
  /* elements per channel, counted directly: numel / C divided by zero for
   * an input with no channels */
  int64_t count = 1;
  for (int i = 0; i < x->ndim; i++)
    if (i != 1) {
      axes[n++] = i;
      count *= x->shape[i];
    }
  nb_tensor *mean, *var, *xc = NULL;
  if (training || !running_mean || !running_var) {
    mean = nb_mean(g, x, n, axes, 1);
    xc = nb_sub(g, x, mean);
    var = nb_mean(g, nb_square(g, xc), n, axes, 1);
    if (training && running_mean && running_var && mean && var) {
      float unbias = count > 1 ? (float)count / (float)(count - 1) : 1.0f;
      int64_t c = x->shape[1];
      nb_tensor *m = nb_scalar(g, momentum), *keep = nb_scalar(g, 1.0f - momentum);
      nb_tensor *bm = nb_reshape(g, mean, 1, &c), *bv = nb_reshape(g, var, 1, &c);
      nb_tensor *am =
          nb_assign(g, running_mean, nb_add(g, nb_mul(g, running_mean, keep), nb_mul(g, bm, m)));
      nb_tensor *av = nb_assign(
          g, running_var,
          nb_add(g, nb_mul(g, running_var, keep), nb_mul(g, bv, nb_scalar(g, momentum * unbias))));
      /* e.g. running stats that are not variables: the graph holds the
       * error, and the caller must not get a node that looks fine */
      if (!am || !av) return NULL;
    }
  } else {
    mean = channel_view(g, running_mean, x);
    var = channel_view(g, running_var, x);
  }
  if (xc) {
    /* Batch statistics: y = xc * (rsqrt(var + eps) * gamma) + beta, with
     * the centred input shared by the variance and the output and the scale
     * folded per channel first. Autodiff then reads and writes the full
     * tensor about half as often (the CPU profile of a ResNet step: 13 full
     * passes per batch norm backward became 6, 7 forward became 5); eval
     * mode keeps the form below, which the ONNX exporter recognises. */
    nb_tensor *s = nb_rsqrt(g, nb_add(g, var, nb_scalar(g, eps)));
    if (gamma) s = nb_mul(g, s, channel_view(g, gamma, x));
    nb_tensor *y = nb_mul(g, xc, s);
    if (beta) y = nb_add(g, y, channel_view(g, beta, x));
    return y;
  }
  nb_tensor *y = nb_mul(g, nb_sub(g, x, mean), nb_rsqrt(g, nb_add(g, var, nb_scalar(g, eps))));
  if (gamma) y = nb_mul(g, y, channel_view(g, gamma, x));
  if (beta) y = nb_add(g, y, channel_view(g, beta, x));
  return y;
}

nb_tensor *nb_layer_norm(nb_graph *g, nb_tensor *x, int nlast, nb_tensor *gamma, nb_tensor *beta,
                         float eps) {
  if (!have_args(g, "layer_norm", 1, &x, (const char *const[]){"input x"})) return NULL;
  if (nlast <= 0 || nlast > x->ndim) {
    nb_graph_fail(
        g, nb_error(NB_ERR_INVALID_ARG, "layer_norm: nlast = %d outside [1, %d]", nlast, x->ndim));
    return NULL;
  }
  int axes[NB_MAX_DIMS];
  for (int i = 0; i < nlast; i++) axes[i] = x->ndim - nlast + i;
  nb_tensor *mean = nb_mean(g, x, nlast, axes, 1);
  nb_tensor *xc = nb_sub(g, x, mean);
  nb_tensor *var = nb_mean(g, nb_square(g, xc), nlast, axes, 1);
  nb_tensor *y = nb_mul(g, xc, nb_rsqrt(g, nb_add(g, var, nb_scalar(g, eps))));
  /* gamma/beta broadcast over the leading axes by numpy rules */
  if (gamma) y = nb_mul(g, y, gamma);
  if (beta) y = nb_add(g, y, beta);
  return y;
}

/* ---- losses --------------------------------------------------------------------- */

static int check_class_inputs(nb_graph *g, const char *op, const nb_tensor *x,
                              const nb_tensor *labels) {
  char s0[128], s1[128];
  if (x->ndim != 2 || labels->ndim != 1 || labels->shape[0] != x->shape[0]) {
    nb_graph_fail(g,
                  nb_error(NB_ERR_SHAPE, "%s: expected input [N, C] and labels [N], got %s and %s",
                           op, nb_shape_str(x->ndim, x->shape, s0, sizeof s0),
                           nb_shape_str(labels->ndim, labels->shape, s1, sizeof s1)));
    return 0;
  }
  return 1;
}

/* -mean over rows of sum(target * logp) */
static nb_tensor *soft_nll(nb_graph *g, nb_tensor *logp, nb_tensor *target) {
  /* logp is NULL when log_softmax failed (f16 logits, another graph's
   * tensor); its error is already in the graph */
  if (!logp || !target) return NULL;
  nb_tensor *total = nb_sum(g, nb_mul(g, target, logp), 0, NULL, 0);
  return nb_mul(g, total, nb_scalar(g, -1.0f / (float)logp->shape[0]));
}

nb_tensor *nb_nll_loss(nb_graph *g, nb_tensor *logp, nb_tensor *labels) {
  if (!have_args(g, "nll_loss", 2, (nb_tensor *[]){logp, labels},
                 (const char *const[]){"input logp", "labels"}))
    return NULL;
  if (!check_class_inputs(g, "nll_loss", logp, labels)) return NULL;
  return soft_nll(g, logp, nb_one_hot(g, labels, logp->shape[1]));
}

nb_tensor *nb_cross_entropy(nb_graph *g, nb_tensor *logits, nb_tensor *labels,
                            float label_smoothing) {
  if (!have_args(g, "cross_entropy", 2, (nb_tensor *[]){logits, labels},
                 (const char *const[]){"input logits", "labels"}))
    return NULL;
  if (!check_class_inputs(g, "cross_entropy", logits, labels)) return NULL;
  if (!(label_smoothing >= 0.0f && label_smoothing < 1.0f)) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG,
                              "cross_entropy: label_smoothing %g is outside [0, 1)",
                              (double)label_smoothing));
    return NULL;
  }
  int64_t c = logits->shape[1];
  nb_tensor *target = nb_one_hot(g, labels, c);
  if (label_smoothing > 0.0f)
    target = nb_add(g, nb_mul(g, target, nb_scalar(g, 1.0f - label_smoothing)),
                    nb_scalar(g, label_smoothing / (float)c));
  return soft_nll(g, nb_log_softmax(g, logits, 1), target);
}

nb_tensor *nb_mse_loss(nb_graph *g, nb_tensor *pred, nb_tensor *target) {
  if (!have_args(g, "mse_loss", 2, (nb_tensor *[]){pred, target},
                 (const char *const[]){"sub: input pred", "sub: input target"}))
    return NULL;
  return nb_mean(g, nb_square(g, nb_sub(g, pred, target)), 0, NULL, 0);
}

nb_tensor *nb_bce_with_logits(nb_graph *g, nb_tensor *logits, nb_tensor *target) {
  if (!have_args(g, "bce_with_logits", 2, (nb_tensor *[]){logits, target},
                 (const char *const[]){"input logits", "target"}))
    return NULL;
  /* softplus(x) - x*t. softplus is linear above its threshold and
   * log1p(exp(x)) below it, so +-50 neither overflows nor loses the tail.
   * The former max(x, 0) - x*t + softplus(-|x|) had the same value but the
   * gradient -t at x == 0 (relu' and |x|' are both 0 there) instead of
   * sigmoid(0) - t, and zero logits are common (zero-initialised heads). */
  nb_tensor *x = logits;
  nb_tensor *l = nb_sub(g, nb_softplus(g, x, 1.0f, 20.0f), nb_mul(g, x, target));
  return nb_mean(g, l, 0, NULL, 0);
}
