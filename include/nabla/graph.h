/* nabla computation graphs: leaves (inputs, variables, constants), op
 * constructors, automatic differentiation, and inspection.
 *
 * Op constructors only record a node and infer its shape; nothing is computed
 * until the graph is compiled into a plan (backend.h) and run.
 *
 * Errors are sticky: a constructor that fails (wrong shapes, bad argument)
 * returns NULL and records the first error in the graph; every later
 * constructor given a NULL input also returns NULL. Build the whole graph,
 * then check nb_graph_status() once. */
#ifndef NABLA_GRAPH_H
#define NABLA_GRAPH_H

#include <stdio.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_graph nb_graph;
typedef struct nb_tensor nb_tensor;

/* ---- graph ---------------------------------------------------------------- */

nb_graph *nb_graph_new(void);
void nb_graph_free(nb_graph *g);

/* First error recorded while building (NB_OK if none), and its message. */
nb_status nb_graph_status(const nb_graph *g);
const char *nb_graph_error(const nb_graph *g);

/* Records an error in the graph (kept only if it is the first) and returns
 * st; for code that builds on the graph API, such as layers. */
nb_status nb_graph_set_error(nb_graph *g, nb_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Nodes in creation order, which is always a valid execution order. */
int nb_graph_node_count(const nb_graph *g);
nb_tensor *nb_graph_node(const nb_graph *g, int i);
/* First node with this name, or NULL. */
nb_tensor *nb_graph_find(const nb_graph *g, const char *name);

/* Writes the graph as Graphviz DOT. */
nb_status nb_graph_write_dot(const nb_graph *g, FILE *f);

/* ---- tensors (graph nodes) ------------------------------------------------ */

int nb_tensor_ndim(const nb_tensor *t);
const int64_t *nb_tensor_shape(const nb_tensor *t);
int64_t nb_tensor_numel(const nb_tensor *t);
nb_dtype nb_tensor_dtype(const nb_tensor *t);
const char *nb_tensor_name(const nb_tensor *t); /* "" if unnamed */
void nb_tensor_set_name(nb_tensor *t, const char *name);
const char *nb_tensor_op_name(const nb_tensor *t);
int nb_tensor_id(const nb_tensor *t);
/* The node's inputs (the nodes its op reads), for walking a graph: their
 * count (0 for leaves and for NULL) and input i, NULL outside [0, count). */
int nb_tensor_input_count(const nb_tensor *t);
nb_tensor *nb_tensor_input(const nb_tensor *t, int i);
/* 1 if the node's elements are laid out densely in row-major order. */
int nb_tensor_is_contiguous(const nb_tensor *t);
/* Marks a node as a plan output: it keeps its own memory and can be read
 * with nb_plan_get() after a run. */
void nb_tensor_set_output(nb_tensor *t);
/* Asks autodiff to produce this leaf's gradient (variables made with
 * nb_param() already do). */
void nb_tensor_set_requires_grad(nb_tensor *t, int on);
int nb_tensor_requires_grad(const nb_tensor *t);

/* ---- device placement (model parallelism, docs/distributed.md) ------------ */

/* Checks a device name and writes its canonical form into out (cap bytes):
 * "cpu" -> "cpu:0", "cpu:N", "cuda" -> "cuda:0", "cuda:N". Anything else is
 * NB_ERR_INVALID_ARG naming the accepted forms. It says nothing of whether
 * this build or machine has the device: nb_backend_new() does. */
nb_status nb_device_canonical(const char *device, char *out, size_t cap);

/* A placement scope: every node created from now on (leaves, ops, and all
 * that layers and autodiff build) is placed on `device` until the next
 * call; NULL or "" ends the scope. A bad name is an error (also recorded in
 * the graph) that leaves the scope as it was. */
nb_status nb_graph_set_device(nb_graph *g, const char *device);
/* The current scope's device ("" when none). */
const char *nb_graph_device(const nb_graph *g);
/* Places one node on `device` (NULL or "": unplaced). */
nb_status nb_tensor_set_device(nb_tensor *t, const char *device);
/* The node's placement, "" when it has none. nb_compile() places every
 * unplaced node (docs/distributed.md, "Placement rules"): a view and an
 * assign go with their data, an op with its first placed input, the rest
 * with their first reader, and what is left on the compiling backend.
 * Gradients take the device of the forward node they come from. */
const char *nb_tensor_device(const nb_tensor *t);

/* How a plan with micro-batches (nb_compile_options.micro_batches = M > 1)
 * treats a node across the M micro-batches of one run. */
typedef enum nb_micro {
  NB_MICRO_MEAN = 0, /* default. An input: the same for every micro-batch. An
                        output (f32): the mean of the M results, which for a
                        mean loss is the loss of the whole batch. */
  NB_MICRO_SPLIT,    /* axis 0 counts examples. An input is fed M
                        micro-batches at once and each takes its slice; an
                        output is the M results concatenated along axis 0. */
  NB_MICRO_SUM,      /* an output (f32): the sum of the M results (counts) */
} nb_micro;

void nb_tensor_set_micro(nb_tensor *t, nb_micro how);
nb_micro nb_tensor_micro(const nb_tensor *t);

/* ---- mixed precision (docs/cuda.md, "Mixed precision") -------------------- */

/* An autocast scope, like torch.autocast: while it is NB_BF16 or NB_F16,
 * every nb_matmul and nb_conv2d created (by layers, or directly) casts its
 * f32 operands to that dtype, inside the graph, so f32 weights stay the
 * masters in the state and the cast runs every step. The op multiplies
 * the half-precision operands with f32 accumulation and returns f32, so
 * what follows (bias, activations, norms, softmax, losses, reductions, the
 * optimizer) stays f32. The gradient ops of such a matmul or convolution
 * cast the incoming f32 gradient to the same dtype and also return f32,
 * and the gradient of a cast is the gradient cast back, so weight
 * gradients are f32. NB_F32 ends the scope (the default); any other dtype
 * is NB_ERR_INVALID_ARG. The scope needs to cover only the forward build:
 * nb_graph_backward follows the dtypes the forward ops took. */
nb_status nb_graph_set_autocast(nb_graph *g, nb_dtype dt);
/* The scope's dtype (NB_F32 when off). */
nb_dtype nb_graph_autocast(const nb_graph *g);

/* ---- leaves --------------------------------------------------------------- */

/* How a variable is filled the first time a state sees it. */
typedef enum nb_init_kind {
  NB_INIT_ZEROS = 0,
  NB_INIT_CONSTANT, /* all elements = a */
  NB_INIT_UNIFORM,  /* U(a, b) */
  NB_INIT_NORMAL,   /* N(mean a, std b) */
} nb_init_kind;

typedef struct nb_init {
  nb_init_kind kind;
  float a, b;
  uint64_t seed;
} nb_init;

/* Data fed at run time with nb_plan_set_input(). */
nb_tensor *nb_input(nb_graph *g, const char *name, nb_dtype dt, int ndim, const int64_t *shape);
/* Persistent named state (optimizer moments, running statistics). Lives in
 * an nb_state, survives between runs, and is written only by nb_assign(). */
nb_tensor *nb_variable(nb_graph *g, const char *name, nb_dtype dt, int ndim, const int64_t *shape,
                       nb_init init);
/* A trainable f32 variable (requires_grad on). */
nb_tensor *nb_param(nb_graph *g, const char *name, int ndim, const int64_t *shape, nb_init init);
/* Constant data, copied into the graph. */
nb_tensor *nb_constant(nb_graph *g, nb_dtype dt, int ndim, const int64_t *shape, const void *data);
/* A rank-0 f32 constant. */
nb_tensor *nb_scalar(nb_graph *g, float value);

/* Side effect: writes `value` into variable `var` at the end of the step (all
 * reads of `var` in the same run see the old value). Returns the assign node;
 * the compiler keeps it alive even though nothing consumes it. */
nb_tensor *nb_assign(nb_graph *g, nb_tensor *var, nb_tensor *value);

/* ---- elementwise (numpy broadcasting for every binary op) ---------------- */

nb_tensor *nb_add(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_sub(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_mul(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_div(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_pow(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_maximum(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_minimum(nb_graph *g, nb_tensor *a, nb_tensor *b);
/* Comparisons give an f32 mask of 0.0 / 1.0 and have zero gradient. */
nb_tensor *nb_eq(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_ne(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_lt(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_le(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_gt(nb_graph *g, nb_tensor *a, nb_tensor *b);
nb_tensor *nb_ge(nb_graph *g, nb_tensor *a, nb_tensor *b);
/* cond != 0 ? a : b, broadcasting all three. */
nb_tensor *nb_where(nb_graph *g, nb_tensor *cond, nb_tensor *a, nb_tensor *b);

nb_tensor *nb_neg(nb_graph *g, nb_tensor *x);
nb_tensor *nb_abs(nb_graph *g, nb_tensor *x);
nb_tensor *nb_sign(nb_graph *g, nb_tensor *x);
nb_tensor *nb_exp(nb_graph *g, nb_tensor *x);
nb_tensor *nb_log(nb_graph *g, nb_tensor *x);
nb_tensor *nb_sqrt(nb_graph *g, nb_tensor *x);
nb_tensor *nb_rsqrt(nb_graph *g, nb_tensor *x);
nb_tensor *nb_square(nb_graph *g, nb_tensor *x);
nb_tensor *nb_reciprocal(nb_graph *g, nb_tensor *x);
nb_tensor *nb_tanh(nb_graph *g, nb_tensor *x);
/* The error function 2/sqrt(pi) * integral_0^x exp(-t^2) dt (C's erff). */
nb_tensor *nb_erf(nb_graph *g, nb_tensor *x);
nb_tensor *nb_sigmoid(nb_graph *g, nb_tensor *x);
nb_tensor *nb_relu(nb_graph *g, nb_tensor *x);
nb_tensor *nb_leaky_relu(nb_graph *g, nb_tensor *x, float slope);
/* approximate = 0: exact erf form (PyTorch's default); 1: tanh form. */
nb_tensor *nb_gelu(nb_graph *g, nb_tensor *x, int approximate);
nb_tensor *nb_silu(nb_graph *g, nb_tensor *x);
/* log(1 + exp(beta x)) / beta, linear above `threshold` like PyTorch. */
nb_tensor *nb_softplus(nb_graph *g, nb_tensor *x, float beta, float threshold);
nb_tensor *nb_clamp(nb_graph *g, nb_tensor *x, float lo, float hi);
/* Converts dtype; gradients flow through float->float casts. */
nb_tensor *nb_cast(nb_graph *g, nb_tensor *x, nb_dtype dt);

/* ---- reductions ----------------------------------------------------------- */

/* `axes` lists `naxes` axes (negative counts from the end); naxes == 0 means
 * every axis. keepdim keeps reduced axes with size 1. */
nb_tensor *nb_sum(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim);
nb_tensor *nb_mean(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim);
nb_tensor *nb_max(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim);
nb_tensor *nb_min(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim);
/* Variance with `correction` subtracted from the count (1 = unbiased). */
nb_tensor *nb_var(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int correction,
                  int keepdim);
nb_tensor *nb_logsumexp(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim);
/* Index (i64) of the first maximum along `axis`. */
nb_tensor *nb_argmax(nb_graph *g, nb_tensor *x, int axis, int keepdim);

/* ---- shape and data movement ---------------------------------------------- */

/* One entry of `shape` may be -1 (inferred). A view when the input is
 * contiguous, else a copy. */
nb_tensor *nb_reshape(nb_graph *g, nb_tensor *x, int ndim, const int64_t *shape);
/* Views: no data is moved. */
nb_tensor *nb_permute(nb_graph *g, nb_tensor *x, const int *perm);
nb_tensor *nb_transpose(nb_graph *g, nb_tensor *x, int axis0, int axis1);
/* Python-style x[start:stop:step] along one axis (negative indices count
 * from the end, out-of-range values are clamped, step > 0). */
nb_tensor *nb_slice(nb_graph *g, nb_tensor *x, int axis, int64_t start, int64_t stop, int64_t step);
nb_tensor *nb_broadcast_to(nb_graph *g, nb_tensor *x, int ndim, const int64_t *shape);
/* Dense row-major copy (returns x itself if it already is). */
nb_tensor *nb_contiguous(nb_graph *g, nb_tensor *x);
nb_tensor *nb_concat(nb_graph *g, int n, nb_tensor *const *xs, int axis);
/* pads[2*i], pads[2*i+1]: elements added before/after axis i (>= 0). */
nb_tensor *nb_pad(nb_graph *g, nb_tensor *x, const int64_t *pads, float value);
/* Selects entries of `x` along `axis` with an i32/i64 index vector. */
nb_tensor *nb_index_select(nb_graph *g, nb_tensor *x, int axis, nb_tensor *index);
/* out = a copy of x, then out[index[i]] += src[i] along `axis` (duplicate
 * indices accumulate; like torch.index_add). With x a broadcast zero it is
 * the gradient of index_select. Indices outside [0, n) are a run-time error. */
nb_tensor *nb_index_add(nb_graph *g, nb_tensor *x, int axis, nb_tensor *index, nb_tensor *src);
/* Integer labels of any shape -> f32 [..., num_classes]. */
nb_tensor *nb_one_hot(nb_graph *g, nb_tensor *labels, int64_t num_classes);
/* weight [V, D] looked up by integer ids of any shape -> [..., D]. */
nb_tensor *nb_embedding(nb_graph *g, nb_tensor *weight, nb_tensor *ids);

/* ---- run-time positions (decoding with a KV cache) ------------------------- */

/* These ops take a position `pos` that is known only when the plan runs:
 * one i32 or i64 element, usually an nb_input fed before each run, so one
 * compiled plan serves every position. A position out of range is a
 * run-time error from nb_plan_run naming the position and the size. They
 * are forward only (no gradient). */

/* Writes `value` into rows [pos, pos + n) of `axis` of variable `var`
 * (n = value's size on that axis; the other axes must match var's) when
 * its launch runs, in place, in creation order: unlike nb_assign it is not
 * deferred to the end of the step. Returns var after the write (stored in
 * the variable itself): read that node, not `var`, to see the new rows
 * (a reader of the result is ordered after the write). The write happens
 * even when nothing reads the result. Rows outside the window keep their
 * values, which makes `var` a fixed-capacity buffer filled position by
 * position, like a KV cache. */
nb_tensor *nb_write_at(nb_graph *g, nb_tensor *var, nb_tensor *value, int axis, nb_tensor *pos);
/* A copy of rows [pos, pos + len) of `axis` of x (x[pos:pos + len] with a
 * run-time start), e.g. the positional embeddings of the tokens at pos. */
nb_tensor *nb_slice_at(nb_graph *g, nb_tensor *x, int axis, nb_tensor *pos, int64_t len);

/* ---- linear algebra and convolution --------------------------------------- */

/* Batched matrix product with broadcast batch dimensions: [..., m, k] x
 * [..., k, n] -> [..., m, n]; 1-d operands are promoted like numpy.
 * Operands are both f32, both bf16 or both f16; the product is accumulated
 * and returned in f32 (see nb_graph_set_autocast). */
nb_tensor *nb_matmul(nb_graph *g, nb_tensor *a, nb_tensor *b);

typedef struct nb_conv2d_params {
  int stride[2];   /* default 1 */
  int padding[2];  /* default 0 */
  int dilation[2]; /* default 1 */
  int groups;      /* default 1 */
} nb_conv2d_params;

/* Defaults: stride 1, padding 0, dilation 1, groups 1. */
nb_conv2d_params nb_conv2d_defaults(void);
/* x [N, C, H, W], w [K, C/groups, R, S] -> [N, K, P, Q]. No bias (add it).
 * x and w (dy and w, x and dy for the gradient ops) share one dtype, f32,
 * bf16 or f16; the result is f32. */
nb_tensor *nb_conv2d(nb_graph *g, nb_tensor *x, nb_tensor *w, const nb_conv2d_params *p);
/* Gradient ops of conv2d, also usable directly (transposed convolution). */
nb_tensor *nb_conv2d_backward_input(nb_graph *g, nb_tensor *dy, nb_tensor *w,
                                    const int64_t *x_shape, const nb_conv2d_params *p);
nb_tensor *nb_conv2d_backward_weight(nb_graph *g, nb_tensor *x, nb_tensor *dy,
                                     const int64_t *w_shape, const nb_conv2d_params *p);

typedef struct nb_pool2d_params {
  int kernel[2];
  int stride[2];  /* 0 = same as kernel */
  int padding[2]; /* default 0 */
  int ceil_mode;
  int count_include_pad; /* avg pool only; PyTorch default 1 */
} nb_pool2d_params;

nb_pool2d_params nb_pool2d_defaults(int kh, int kw);
nb_tensor *nb_max_pool2d(nb_graph *g, nb_tensor *x, const nb_pool2d_params *p);
nb_tensor *nb_avg_pool2d(nb_graph *g, nb_tensor *x, const nb_pool2d_params *p);
/* [N, C, H, W] -> [N, C, 1, 1]. */
nb_tensor *nb_global_avg_pool2d(nb_graph *g, nb_tensor *x);

/* ---- normalisation, softmax, losses, dropout ------------------------------ */

/* Normalises each channel (axis 1) of [N, C, ...]. In training mode uses
 * batch statistics and appends assigns that update running_mean/var
 * (variables, may be NULL) with `momentum` like PyTorch (unbiased variance);
 * otherwise uses the running statistics. gamma/beta [C] may be NULL. */
nb_tensor *nb_batch_norm(nb_graph *g, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta,
                         nb_tensor *running_mean, nb_tensor *running_var, int training,
                         float momentum, float eps);
/* Normalises over the last `nlast` axes; gamma/beta have those axes' shape
 * (may be NULL). */
nb_tensor *nb_layer_norm(nb_graph *g, nb_tensor *x, int nlast, nb_tensor *gamma, nb_tensor *beta,
                         float eps);
nb_tensor *nb_softmax(nb_graph *g, nb_tensor *x, int axis);
nb_tensor *nb_log_softmax(nb_graph *g, nb_tensor *x, int axis);
/* Mean cross-entropy of logits [N, C] against integer labels [N], with
 * optional label smoothing in [0, 1). */
nb_tensor *nb_cross_entropy(nb_graph *g, nb_tensor *logits, nb_tensor *labels,
                            float label_smoothing);
/* Mean negative log-likelihood of log-probabilities [N, C], labels [N]. */
nb_tensor *nb_nll_loss(nb_graph *g, nb_tensor *logp, nb_tensor *labels);
nb_tensor *nb_mse_loss(nb_graph *g, nb_tensor *pred, nb_tensor *target);
/* Mean binary cross-entropy of logits against targets in [0, 1]. */
nb_tensor *nb_bce_with_logits(nb_graph *g, nb_tensor *logits, nb_tensor *target);
/* Inverted dropout: zeroes with probability p and scales the rest by
 * 1/(1-p). The mask depends on (seed, plan step, element index) only, so
 * runs are reproducible. Identity when training is 0. */
nb_tensor *nb_dropout(nb_graph *g, nb_tensor *x, float p, uint64_t seed, int training);

/* ---- automatic differentiation -------------------------------------------- */

/* Appends the reverse-mode gradient of scalar `loss` with respect to every
 * leaf that requires grad (and every node in between) to the same graph.
 * Gradient nodes are ordinary nodes. */
nb_status nb_graph_backward(nb_graph *g, nb_tensor *loss);
/* The gradient node of `t` after nb_graph_backward(), or NULL if `t` does not
 * influence the loss. */
nb_tensor *nb_graph_grad(const nb_graph *g, const nb_tensor *t);

/* Recomputation (activation checkpointing, like torch.utils.checkpoint):
 * the nodes built between nb_graph_recompute_begin() and
 * nb_graph_recompute_end() form a segment. nb_graph_backward() does not
 * keep the segment's inner values for the backward pass: it rebuilds the
 * segment from its inputs right before the segment's gradients need them,
 * so the memory planner frees the first copies after the forward pass, at
 * the cost of running the segment's forward twice. Values read after the
 * segment (its output) are kept as usual. Dropout draws the same masks
 * when recomputed (a mask hashes seed, run and position); variables,
 * inputs, constants and assigns (batch norm's running statistics) are not
 * recomputed. Segments do not nest: begin while one is open, or end
 * without one, is NB_ERR_STATE and fails the graph (nb_graph_status), as a
 * bad op would; on a graph that already failed, begin returns its error.
 * nb_graph_backward() with a segment open is NB_ERR_STATE and leaves the
 * graph as it was (end the segment, then call it again). Second-order
 * gradients through a segment agree with those without to rounding (the
 * first-order ones bit for bit). */
nb_status nb_graph_recompute_begin(nb_graph *g);
nb_status nb_graph_recompute_end(nb_graph *g);
/* 1 while a segment is open. */
int nb_graph_recompute_open(const nb_graph *g);

/* ---- op table ------------------------------------------------------------- */

typedef struct nb_op_info {
  const char *name;
  const char *fusion; /* "elementwise", "reduce", "view", "opaque", "leaf" */
  int has_backward;   /* differentiable (or has zero gradient by definition) */
  int composite;      /* built from other ops (no kernel of its own) */
} nb_op_info;

int nb_op_count(void);
/* Information on op `i` in [0, nb_op_count()). */
nb_op_info nb_op_get_info(int i);

#ifdef __cplusplus
}
#endif

#endif
