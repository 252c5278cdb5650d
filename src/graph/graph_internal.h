/* Graph internals shared by src/graph, src/compile and the backends.
 * Not installed; the public door is include/nabla/graph.h. */
#ifndef NB_GRAPH_INTERNAL_H
#define NB_GRAPH_INTERNAL_H

#include <stdint.h>

#include "nabla/graph.h"

/* One entry per node op. Composite functions (batch_norm, cross_entropy, ...)
 * are built from these and have no opcode of their own. */
typedef enum nb_opcode {
  /* leaves and side effects */
  NB_OP_INPUT,
  NB_OP_VARIABLE,
  NB_OP_CONSTANT,
  NB_OP_ASSIGN, /* in[0] = variable, in[1] = value */
  /* elementwise binary (broadcasting) */
  NB_OP_ADD,
  NB_OP_SUB,
  NB_OP_MUL,
  NB_OP_DIV,
  NB_OP_POW,
  NB_OP_MAXIMUM,
  NB_OP_MINIMUM,
  NB_OP_EQ,
  NB_OP_NE,
  NB_OP_LT,
  NB_OP_LE,
  NB_OP_GT,
  NB_OP_GE,
  NB_OP_GELU_BWD, /* in[0] = x, in[1] = dy; fp[0] = approximate */
  /* elementwise ternary */
  NB_OP_WHERE,
  /* elementwise unary */
  NB_OP_NEG,
  NB_OP_ABS,
  NB_OP_SIGN,
  NB_OP_EXP,
  NB_OP_LOG,
  NB_OP_SQRT,
  NB_OP_RSQRT,
  NB_OP_SQUARE,
  NB_OP_RECIPROCAL,
  NB_OP_TANH,
  NB_OP_ERF,
  NB_OP_SIGMOID,
  NB_OP_RELU,
  NB_OP_LEAKY_RELU, /* fp[0] = slope */
  NB_OP_GELU,       /* ip[0] = approximate */
  NB_OP_SILU,
  NB_OP_SOFTPLUS, /* fp[0] = beta, fp[1] = threshold */
  NB_OP_CLAMP,    /* fp[0] = lo, fp[1] = hi */
  NB_OP_DROPOUT,  /* fp[0] = p; ip[0] = seed */
  /* dtype and layout */
  NB_OP_CAST,
  NB_OP_COPY, /* dense copy of a strided view */
  /* views: no kernel, the node aliases its base's storage */
  NB_OP_RESHAPE,
  NB_OP_PERMUTE,
  NB_OP_SLICE,
  NB_OP_BROADCAST,
  /* reductions: ip[0] = axis bitmask, ip[1] = keepdim */
  NB_OP_SUM,
  NB_OP_MAX,
  NB_OP_MIN,
  NB_OP_ARGMAX, /* ip[0] = axis, ip[1] = keepdim */
  /* data movement */
  NB_OP_CONCAT,       /* ip[0] = axis */
  NB_OP_PAD,          /* ip[0..2*ndim) = pads; fp[0] = value */
  NB_OP_INDEX_SELECT, /* in[0] = x, in[1] = index; ip[0] = axis */
  NB_OP_INDEX_ADD,    /* in[0] = x (shape only), in[1] = index, in[2] = src; ip[0] = axis */
  NB_OP_ONE_HOT,      /* ip[0] = classes */
  /* dense linear algebra */
  NB_OP_MATMUL,
  NB_OP_CONV2D,            /* ip: stride[2], padding[2], dilation[2], groups */
  NB_OP_CONV2D_BWD_INPUT,  /* in[0] = dy, in[1] = w; same ip */
  NB_OP_CONV2D_BWD_WEIGHT, /* in[0] = x, in[1] = dy; same ip */
  NB_OP_MAXPOOL2D,         /* ip: kernel[2], stride[2], padding[2], ceil_mode */
  NB_OP_MAXPOOL2D_BWD,     /* in[0] = x, in[1] = dy; same ip */
  NB_OP_AVGPOOL2D,         /* ip: kernel[2], stride[2], padding[2], ceil, count_pad */
  NB_OP_AVGPOOL2D_BWD,     /* in[0] = dy; same ip; output shape of x */
  NB_OP_SOFTMAX,           /* ip[0] = axis */
  NB_OP_LOG_SOFTMAX,       /* ip[0] = axis */
  /* fused scaled-dot-product attention (ops_attention.c): ip[0] = causal, fp[0] = scale */
  NB_OP_ATTENTION,     /* in: q, k, v; out [B, H, Tq, Dv + 1]: y and the row logsumexp */
  NB_OP_ATTENTION_BWD, /* in: q, k, v, fwd, dfwd; out flat [dq | dk | dv] */
  /* decoding with a KV cache (ops_decode.c): `pos` is one i32/i64 element read at run time */
  NB_OP_WRITE_AT,         /* in: variable, value, pos; ip[0] = axis; stored in the variable */
  NB_OP_SLICE_AT,         /* in: x, pos; ip[0] = axis, ip[1] = length */
  NB_OP_ATTENTION_CACHED, /* in: q, k_cache, v_cache, pos; fp[0] = scale; out like ATTENTION */
  /* data-parallel gradient averaging (ops_dist.c); data = the communicator's
   * table (src/core/collective.h) */
  NB_OP_ALLREDUCE_START, /* in: f32 tensors; out flat [sum of numels], reduction started */
  NB_OP_ALLREDUCE_WAIT,  /* in: its start; out = the waited sum * fp[0] (1 / ranks) */
  NB_OP_COUNT
} nb_opcode;

typedef enum nb_fusion {
  NB_FUSE_LEAF,
  NB_FUSE_ELEMWISE,
  NB_FUSE_REDUCE,
  NB_FUSE_VIEW,
  NB_FUSE_OPAQUE,
} nb_fusion;

enum {
  NB_FLAG_OUTPUT = 1u << 0,
  NB_FLAG_REQUIRES_GRAD = 1u << 1,
  NB_FLAG_NEEDS_GRAD = 1u << 2, /* set by autodiff: on a path from a grad leaf */
  /* set by autodiff on the gradient of every variable, before clipping or
   * averaging replace nb_graph_grad(): what a pipelined plan accumulates
   * over its micro-batches (src/compile/partition.c) */
  NB_FLAG_PARAM_GRAD = 1u << 3,
  /* a variable of the compiler's own (a pipelined plan's gradient
   * accumulator): bound in the plan's scratch state, not the caller's */
  NB_FLAG_SCRATCH = 1u << 4,
  /* a node recomputed for the backward pass (recompute.c): the multi-device
   * partitioner schedules it just before its readers, not with the
   * forward pass whose values it reads (partition.c) */
  NB_FLAG_RECOMPUTED = 1u << 5,
  /* a pipelined plan's per-micro-batch result that the caller reads after
   * the run: the compiler stores it outside the arena, because the
   * instances of one micro-batch segment share their arenas (multiplan.c) */
  NB_FLAG_APART = 1u << 6,
  /* a pipelined plan's hand-over: a result another segment reads after this
   * one's run. Stored outside the arena, whose temporaries every plan of
   * the device shares (multiplan.c); the instances of a segment share
   * their kept buffers once the readers are done (pipeline.c). */
  NB_FLAG_KEPT = 1u << 7,
};

/* Most distinct devices one graph places nodes on (placement.c). */
#define NB_GRAPH_MAX_DEVICES 64
/* Longest canonical device name ("cuda:1023"), NUL included. */
#define NB_DEVICE_NAME_MAX 16

#define NB_OP_IPARAMS 20
#define NB_OP_FPARAMS 4

struct nb_tensor {
  nb_graph *graph;
  int id; /* index in graph->nodes; inputs always have smaller ids */
  nb_opcode op;
  nb_dtype dtype;
  int ndim;
  int64_t shape[NB_MAX_DIMS];
  /* Layout in elements relative to the storage of `base` (or of this node
   * when base is NULL). Non-view nodes are always contiguous at offset 0. */
  int64_t stride[NB_MAX_DIMS];
  int64_t offset;
  nb_tensor *base; /* storage owner for views, never itself a view */
  int n_in;
  nb_tensor **in;
  int64_t ip[NB_OP_IPARAMS];
  float fp[NB_OP_FPARAMS];
  char *name;
  unsigned flags;
  void *data;   /* constants: numel * dtype size bytes owned by the graph;
                   allreduce ops: their communicator's nb_collective
                   (not owned) */
  nb_init init; /* variables */
  nb_tensor *grad;
  int device; /* placement: 0 = none, else 1 + index into graph->devices */
  int micro;  /* nb_micro: how micro-batches split or combine it */
  /* recomputation (recompute.c): the segment built around it, 0 = none.
   * A segment's nodes have consecutive ids. */
  int segment;
};

/* True when autodiff needs the gradient of t (backward rules skip others). */
static inline int nb_needs_grad(const nb_tensor *t) { return t && (t->flags & NB_FLAG_NEEDS_GRAD); }

struct nb_graph {
  nb_tensor **nodes;
  int n_nodes, cap_nodes;
  /* bump allocator for nodes, input arrays, names and constant data */
  struct nb_arena_block *blocks;
  nb_status status;
  char error[1024];
  /* placement (placement.c): canonical device names, and the scope that
   * new nodes take (0 = none, else 1 + index) */
  char devices[NB_GRAPH_MAX_DEVICES][NB_DEVICE_NAME_MAX];
  int n_devices;
  int scope_device;
  /* mixed precision (autocast.c): the dtype matmul and conv2d operands are
   * cast to (NB_F32 = off), and, while a loss scaler guards the update, the
   * f32 flag (1 = skip) that every new assign keeps its old value under */
  nb_dtype autocast;
  nb_tensor *assign_guard;
  /* recomputation (recompute.c): the open segment new nodes join (0 =
   * none), and how many segments were opened */
  int segment_open, n_segments;
};

/* Table entry per opcode. `infer` fills dtype, ndim, shape (and, for views,
 * stride/offset/base) from the node's inputs and params, or returns an error
 * via nb_error(). `backward` sets gin[i] to the gradient for input i (NULL
 * for none) given the node's output gradient `gout`, using op constructors
 * only, so gradients are ordinary nodes. */
typedef struct nb_op_def {
  const char *name;
  nb_fusion fusion;
  nb_status (*infer)(nb_tensor *node);
  nb_status (*backward)(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin);
} nb_op_def;

const nb_op_def *nb_op_def_get(nb_opcode op);

/* ---- helpers for op constructors (src/graph/graph.c) ---------------------- */

void *nb_graph_alloc(nb_graph *g, size_t bytes); /* zeroed; NULL on OOM */
/* Creates a node of `op` with inputs and params, runs the op's infer, and
 * records any error (prefixed with the op name) in the graph. Returns NULL
 * if any input is NULL or on error. */
nb_tensor *nb_node_new(nb_graph *g, nb_opcode op, int n_in, nb_tensor *const *in, const int64_t *ip,
                       int n_ip, const float *fp, int n_fp);
/* Appends a copy of `src` (op, params, shape, layout, name, data, init) to
 * g with inputs `in` (src->n_in of them, nodes of g) and view base `base`
 * (NULL unless src is a view), without re-inferring it: how the compiler
 * moves nodes into the graph of one device's part. Unplaced, not an output. */
nb_tensor *nb_node_clone(nb_graph *g, const nb_tensor *src, nb_tensor *const *in, nb_tensor *base);
/* Checks the graph and the inputs of an op about to be built: 0 (and an
 * error recorded, naming `op`) if g is NULL or an input is NULL or belongs to
 * another graph. Constructors that may return an input unchanged (identity
 * reshapes, no-op pads) call it first so those shortcuts validate too. */
int nb_check_inputs(nb_graph *g, nb_opcode op, int n_in, nb_tensor *const *in);
/* Records an error in g (if none yet) from the thread's last error message. */
void nb_graph_fail(nb_graph *g, nb_status st);
/* Sets contiguous row-major strides for the node's shape. */
void nb_set_contiguous_strides(nb_tensor *t);
int nb_is_view_op(nb_opcode op);
nb_status nb_infer_assign(nb_tensor *t);

/* Placement (placement.c). The device index of `name` in g (1 + index,
 * adding it if new), or -1 with an error for a bad name; 0 for NULL/"". */
int nb_graph_device_index(nb_graph *g, const char *name);
/* The placement of each of the first n nodes as autodiff sees it: a node's
 * own device, else that of its first placed input (0: none). */
void nb_place_forward(const nb_graph *g, int n, int *dev);

/* Mixed precision (autocast.c). x cast to the graph's autocast dtype when
 * autocast is on and x is f32, else x itself: what nb_matmul and nb_conv2d
 * do to their operands. */
nb_tensor *nb_autocast_operand(nb_graph *g, nb_tensor *x);
/* 1 for the half-precision dtypes matmul and conv2d take (f16, bf16). */
static inline int nb_dtype_is_half(nb_dtype dt) { return dt == NB_F16 || dt == NB_BF16; }
/* The gradient gout (f32) cast to a half-precision operand's dtype, so a
 * gradient matmul or convolution runs in the precision of its forward op;
 * gout itself for f32 operands. */
nb_tensor *nb_autocast_grad(nb_graph *g, nb_tensor *gout, const nb_tensor *operand);
/* While `skip` (a rank-0 f32 node, 1 = skip) is set, nb_assign(var, v)
 * writes where(skip, var, v): the loss scaler's guard over an update
 * (src/optim/grad_scaler.c). NULL ends it. */
void nb_graph_set_assign_guard(nb_graph *g, nb_tensor *skip);

/* Recomputation (recompute.c), for autodiff: the recomputed copy of the
 * nodes of `segment` among the first n nodes, appended to g now; map[id]
 * (n entries, the caller's) receives each segment node's copy, or the node
 * itself where it is not recomputed (leaves, assigns). */
nb_status nb_recompute_segment(nb_graph *g, int segment, int n, nb_tensor **map);

/* Broadcasts shapes a and b numpy-style into out; returns 0 if they clash. */
int nb_broadcast_shapes(int na, const int64_t *a, int nb, const int64_t *b, int *nout,
                        int64_t *out);
/* Sums `x` down to `shape` (reverse of broadcasting); the gradient helper
 * for broadcasting ops. Returns x itself when shapes already match. */
nb_tensor *nb_sum_to(nb_graph *g, nb_tensor *x, int ndim, const int64_t *shape);
/* Normalises an axis in [-ndim, ndim) to [0, ndim); -1 if out of range. */
int nb_norm_axis(int axis, int ndim);

/* Per-family tables, indexed by opcode, defined in the ops_*.c files. Each
 * family fills the entries it owns; op_table.c checks all are present. */
void nb_register_ops_elementwise(nb_op_def *table);
void nb_register_ops_reduce(nb_op_def *table);
void nb_register_ops_shape(nb_op_def *table);
void nb_register_ops_linalg(nb_op_def *table);
void nb_register_ops_conv(nb_op_def *table);
void nb_register_ops_nn(nb_op_def *table);
void nb_register_ops_attention(nb_op_def *table);
void nb_register_ops_dist(nb_op_def *table);
void nb_register_ops_decode(nb_op_def *table);

/* The mean over the ranks of c (src/core/collective.h) of the n f32 tensors
 * xs, as an allreduce_start / allreduce_wait pair (ops_dist.c): the graph
 * side of nb_allreduce_mean (dist.h), which src/dist calls with its
 * communicator's table. c must outlive the plans compiled from g. */
struct nb_collective;
nb_status nb_graph_allreduce_mean(nb_graph *g, const struct nb_collective *c, int n,
                                  nb_tensor *const *xs, nb_tensor **outs);

#endif
