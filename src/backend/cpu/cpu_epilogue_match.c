/* Recognises the two epilogues that every CNN training step runs over its
 * largest tensors, so that the kernels producing them can apply them in
 * registers instead of handing each finished chunk to the elementwise
 * engine (cpu_elementwise.c), which gathers the bias, evaluates one op per
 * pass over a 512-element tile and cost about as much as the pooling
 * gradient it followed:
 *
 *   conv2d > add + relu:            out = relu(conv + bias[k])  (bias per channel)
 *   max_pool2d_backward > gt + mul: out = dx * (t > s ? 1 : 0)  (ReLU's gradient)
 *
 * The kernels then do exactly the float operations of the group, in the
 * same order, so results do not change by a bit. Any other group still runs
 * through the engine. */
#include <stdatomic.h>

#include "cpu_internal.h"

/* Launches that applied a matched epilogue themselves: tests read it to
 * know that the fast path ran (its results equal the engine's bit for bit,
 * so they cannot tell otherwise). */
static atomic_llong fused_runs;

void nb_cpu_note_fused_epilogue(void) {
  atomic_fetch_add_explicit(&fused_runs, 1, memory_order_relaxed);
}

int64_t nb_cpu_fused_epilogues(void) {
  return (int64_t)atomic_load_explicit(&fused_runs, memory_order_relaxed);
}

/* The group's external input e: the tensor and its data in the call. */
static const float *ext_data(const nb_kernel_call *c, int e) {
  return (const float *)c->in[c->node->n_in + e];
}

/* The external index through which the group reads the producer's output. */
static int producer_ext(const nb_kernel_call *c) {
  for (int e = 0; e < c->group->n_ext; e++)
    if (c->group->ext[e] == c->node) return e;
  return -1;
}

/* Broadcast stride of x along output axis `axis` when x is read over `out`
 * (0 if broadcast there); -1 if x varies along any other axis. */
static int64_t stride_only_along(const nb_tensor *x, const nb_tensor *out, int axis) {
  int lead = out->ndim - x->ndim;
  int64_t along = 0;
  if (lead < 0) return -1;
  for (int d = 0; d < out->ndim; d++) {
    int j = d - lead;
    int64_t s = (j < 0 || x->shape[j] == 1) ? 0 : x->stride[j];
    if (j >= 0 && x->shape[j] != 1 && x->shape[j] != out->shape[d]) return -1;
    if (d == axis)
      along = s;
    else if (s != 0)
      return -1;
  }
  return along;
}

int nb_cpu_match_chan_bias(const nb_kernel_call *c, nb_cpu_chan_bias *m) {
  const nb_fused_group *g = c->group;
  const nb_tensor *out = c->node;
  if (!g || out->ndim < 2 || out->dtype != NB_F32) return 0;
  if (g->n_ops < 1 || g->n_ops > 2) return 0;
  const nb_fused_op *add = &g->ops[0];
  int pe = producer_ext(c);
  if (pe < 0 || add->op != NB_OP_ADD || add->n_src != 2) return 0;
  /* either operand order: a + b and b + a are the same float */
  int be = add->src[0] == pe ? add->src[1] : add->src[1] == pe ? add->src[0] : -1;
  if (be < 0 || be == pe) return 0;
  const nb_tensor *b = g->ext[be];
  if (b->dtype != NB_F32) return 0;
  int64_t s = stride_only_along(b, out, 1);
  if (s < 0) return 0;
  if (g->n_ops == 2) {
    const nb_fused_op *relu = &g->ops[1];
    if (relu->op != NB_OP_RELU || relu->n_src != 1 || relu->src[0] != -1) return 0;
  }
  m->bias = ext_data(c, be);
  m->stride = s;
  m->relu = g->n_ops == 2;
  nb_cpu_note_fused_epilogue(); /* every caller applies what matched */
  return 1;
}

int nb_cpu_match_relu_grad(const nb_kernel_call *c, nb_cpu_relu_grad *m) {
  const nb_fused_group *g = c->group;
  const nb_tensor *out = c->node;
  if (!g || g->n_ops != 2 || out->dtype != NB_F32) return 0;
  const nb_fused_op *gt = &g->ops[0], *mul = &g->ops[1];
  int pe = producer_ext(c);
  if (pe < 0 || gt->op != NB_OP_GT || gt->n_src != 2 || mul->op != NB_OP_MUL || mul->n_src != 2)
    return 0;
  /* either operand order: the mask is 0 or 1, never NaN, so x * m and
   * m * x are the same float */
  if (!((mul->src[0] == pe && mul->src[1] == -1) || (mul->src[0] == -1 && mul->src[1] == pe)))
    return 0;
  int te = gt->src[0], se = gt->src[1];
  if (te < 0 || se < 0 || te == pe || se == pe) return 0;
  const nb_tensor *t = g->ext[te], *s = g->ext[se];
  if (t->dtype != NB_F32 || s->dtype != NB_F32 || !nb_tensor_is_contiguous(t)) return 0;
  if (t->ndim != out->ndim) return 0;
  for (int d = 0; d < out->ndim; d++)
    if (t->shape[d] != out->shape[d]) return 0;
  /* s: one value broadcast everywhere */
  for (int d = 0; d < s->ndim; d++)
    if (s->shape[d] != 1 && s->stride[d] != 0) return 0;
  m->t = ext_data(c, te);
  m->s = *ext_data(c, se);
  return 1;
}
