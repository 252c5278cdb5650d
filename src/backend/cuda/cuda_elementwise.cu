/* The fused elementwise engine on the GPU. A group (fuse.c: a chain of
 * elementwise ops of one shape, up to 48 ops) runs as one kernel: each
 * thread takes output elements, reads the group's external inputs through
 * their broadcast strides, evaluates the ops in registers, and writes only
 * the last result. The same kernel runs epilogues: the group of an opaque
 * kernel's output, in place over that output.
 *
 * The group travels as a kernel parameter (up to ~13 KB for the largest
 * groups, within the 32 KB CUDA 12.1+ allows on sm_70 and later), so a
 * launch needs no upload and a plan could be captured in a CUDA graph.
 * Axes are merged where every input allows (a contiguous tensor plus a
 * per-channel bias over [N, C, H, W] keeps two axes), so each element costs
 * a few divisions at most; inputs laid out like the output are read at the
 * element's own index.
 *
 * The arithmetic is the CPU engine's expression for expression (no fast
 * math), so results differ only by the last bits of the math library. */
#include <string.h>

#include "cuda_internal.h"

namespace {

struct ew_op {
  int op, n_src;
  int src[3]; /* >= 0: external input; < 0: result of op -(src + 1) */
  float fp[NB_OP_FPARAMS];
  long long ip0;
};

template <int MO, int ME> struct ew_desc {
  float *out;
  int64_t n;
  uint64_t step;
  const uint64_t *step_at; /* the plan's run counter (device), or NULL: use step */
  int n_ops, n_ext, ndim, all_dense;
  int64_t shape[NB_MAX_DIMS];
  const float *ext[ME];
  int64_t stride[ME][NB_MAX_DIMS];
  int dense[ME];
  ew_op ops[MO];
};

/* The ops this engine evaluates: a new elementwise opcode is unsupported
 * here until it gets a case below (and in ew_eval). */
bool known_op(int op) {
  switch (op) {
  case NB_OP_ADD:
  case NB_OP_SUB:
  case NB_OP_MUL:
  case NB_OP_DIV:
  case NB_OP_POW:
  case NB_OP_MAXIMUM:
  case NB_OP_MINIMUM:
  case NB_OP_EQ:
  case NB_OP_NE:
  case NB_OP_LT:
  case NB_OP_LE:
  case NB_OP_GT:
  case NB_OP_GE:
  case NB_OP_GELU_BWD:
  case NB_OP_WHERE:
  case NB_OP_NEG:
  case NB_OP_ABS:
  case NB_OP_SIGN:
  case NB_OP_EXP:
  case NB_OP_LOG:
  case NB_OP_SQRT:
  case NB_OP_RSQRT:
  case NB_OP_SQUARE:
  case NB_OP_RECIPROCAL:
  case NB_OP_TANH:
  case NB_OP_ERF:
  case NB_OP_SIGMOID:
  case NB_OP_RELU:
  case NB_OP_LEAKY_RELU:
  case NB_OP_GELU:
  case NB_OP_SILU:
  case NB_OP_SOFTPLUS:
  case NB_OP_CLAMP:
  case NB_OP_DROPOUT: return true;
  default: return false;
  }
}

/* ---- device math, as in cpu_elementwise.c ----------------------------------------- */

__device__ inline float gelu_exact(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

__device__ inline float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

__device__ inline float gelu_grad(float x, int approximate) {
  if (!approximate) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = 0.3989422804014327f * expf(-0.5f * x * x);
    return cdf + x * pdf;
  }
  const float k = 0.7978845608028654f;
  float inner = k * (x + 0.044715f * x * x * x);
  float t = tanhf(inner);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
}

/* nb_hash_uniform (src/core/rng.c), bit for bit, so GPU dropout masks equal
 * the CPU's for the same seed, step and element. */
__device__ inline uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ inline float hash_uniform(uint64_t seed, uint64_t counter) {
  uint64_t x = seed ^ (counter * 0xd1b54a32d192ed03ull);
  uint64_t h = splitmix64(&x);
  return (float)(h >> 40) * 0x1.0p-24f;
}

__device__ inline float ew_eval(const ew_op &op, float a, float b, float c, int64_t i,
                                uint64_t step) {
  switch (op.op) {
  case NB_OP_ADD: return a + b;
  case NB_OP_SUB: return a - b;
  case NB_OP_MUL: return a * b;
  case NB_OP_DIV: return a / b;
  case NB_OP_POW: return powf(a, b);
  case NB_OP_MAXIMUM: return (a != a || a > b) ? a : b;
  case NB_OP_MINIMUM: return (a != a || a < b) ? a : b;
  case NB_OP_EQ: return a == b ? 1.0f : 0.0f;
  case NB_OP_NE: return a != b ? 1.0f : 0.0f;
  case NB_OP_LT: return a < b ? 1.0f : 0.0f;
  case NB_OP_LE: return a <= b ? 1.0f : 0.0f;
  case NB_OP_GT: return a > b ? 1.0f : 0.0f;
  case NB_OP_GE: return a >= b ? 1.0f : 0.0f;
  case NB_OP_GELU_BWD: return b * gelu_grad(a, (int)op.ip0);
  case NB_OP_WHERE: return a != 0.0f ? b : c;
  case NB_OP_NEG: return -a;
  case NB_OP_ABS: return fabsf(a);
  case NB_OP_SIGN: return (float)(a > 0.0f) - (float)(a < 0.0f);
  case NB_OP_EXP: return expf(a);
  case NB_OP_LOG: return logf(a);
  case NB_OP_SQRT: return sqrtf(a);
  case NB_OP_RSQRT: return 1.0f / sqrtf(a);
  case NB_OP_SQUARE: return a * a;
  case NB_OP_RECIPROCAL: return 1.0f / a;
  case NB_OP_TANH: return tanhf(a);
  case NB_OP_ERF: return erff(a);
  case NB_OP_SIGMOID: return 1.0f / (1.0f + expf(-a));
  /* NaN passes through (like PyTorch) so a diverging run is not masked */
  case NB_OP_RELU: return a > 0.0f || a != a ? a : 0.0f;
  case NB_OP_LEAKY_RELU: return a > 0.0f ? a : a * op.fp[0];
  case NB_OP_GELU: return op.ip0 ? gelu_tanh(a) : gelu_exact(a);
  case NB_OP_SILU: return a / (1.0f + expf(-a));
  case NB_OP_SOFTPLUS: {
    float bx = op.fp[0] * a;
    return bx > op.fp[1] ? a : log1pf(expf(bx)) / op.fp[0];
  }
  case NB_OP_CLAMP: return a < op.fp[0] ? op.fp[0] : a > op.fp[1] ? op.fp[1] : a;
  case NB_OP_DROPOUT: {
    float p = op.fp[0], scale = 1.0f / (1.0f - p);
    uint64_t seed = (uint64_t)op.ip0 ^ (step * 0x9e3779b97f4a7c15ull);
    return hash_uniform(seed, (uint64_t)i) < p ? 0.0f : a * scale;
  }
  default: return 0.0f; /* unreachable: known_op() gates every group */
  }
}

template <int MO, int ME>
__global__ void __launch_bounds__(NB_CUDA_THREADS)
    ew_kernel(const __grid_constant__ ew_desc<MO, ME> d) {
  float v[MO];
  /* read at run time, so a replayed recording sees the run it is */
  const uint64_t step = d.step_at ? *d.step_at : d.step;
  NB_CUDA_GRID_STRIDE(i, d.n) {
    int64_t coord[NB_MAX_DIMS];
    if (!d.all_dense) {
      int64_t r = i;
      for (int k = d.ndim - 1; k >= 0; k--) {
        coord[k] = r % d.shape[k];
        r /= d.shape[k];
      }
    }
    for (int k = 0; k < d.n_ops; k++) {
      const ew_op &op = d.ops[k];
      float a[3] = {0.0f, 0.0f, 0.0f};
      for (int s = 0; s < op.n_src; s++) {
        int src = op.src[s];
        if (src < 0) {
          a[s] = v[-src - 1];
        } else if (d.dense[src]) {
          a[s] = d.ext[src][i];
        } else {
          int64_t off = 0;
          for (int q = 0; q < d.ndim; q++) off += coord[q] * d.stride[src][q];
          a[s] = d.ext[src][off];
        }
      }
      v[k] = ew_eval(op, a[0], a[1], a[2], i, step);
    }
    d.out[i] = v[d.n_ops - 1];
  }
}

/* What a launch needs besides the group: the shape it runs over, where each
 * external input lives, and where the result goes. */
struct ew_args {
  const nb_fused_group *g;
  const nb_tensor *shape; /* node whose shape the group has */
  const float *ext[160];
  int is_out[160]; /* external input e is the result buffer itself (epilogue) */
  float *out;
  uint64_t step;
  const uint64_t *step_at;
  const char *what;
};

template <int MO, int ME> nb_status launch(nb_cuda *cu, const ew_args &A) {
  const nb_fused_group *g = A.g;
  const nb_tensor *o = A.shape;
  ew_desc<MO, ME> d;
  memset(&d, 0, sizeof d);
  d.out = A.out;
  d.n = nb_tensor_numel(o);
  d.step = A.step;
  d.step_at = A.step_at;
  d.n_ops = g->n_ops;
  d.n_ext = g->n_ext;
  if (d.n == 0) return NB_OK;
  /* broadcast strides of every input over the output's axes */
  int nd = o->ndim;
  int64_t ostride[NB_MAX_DIMS], bs[ME][NB_MAX_DIMS];
  int64_t run = 1;
  for (int k = nd - 1; k >= 0; k--) {
    ostride[k] = run;
    run *= o->shape[k];
  }
  for (int e = 0; e < g->n_ext; e++) {
    const nb_tensor *x = g->ext[e];
    int lead = nd - x->ndim;
    for (int k = 0; k < nd; k++) {
      int j = k - lead;
      if (A.is_out[e])
        bs[e][k] = ostride[k];
      else
        bs[e][k] = (j < 0 || x->shape[j] == 1) ? 0 : x->stride[j];
    }
  }
  /* merge axes (innermost first) where the output and every input allow */
  int64_t msh[NB_MAX_DIMS], mos[NB_MAX_DIMS], mst[ME][NB_MAX_DIMS];
  int c = -1;
  for (int k = nd - 1; k >= 0; k--) {
    if (o->shape[k] == 1) continue;
    bool merge = c >= 0 && ostride[k] == mos[c] * msh[c];
    for (int e = 0; merge && e < g->n_ext; e++)
      if (bs[e][k] != mst[e][c] * msh[c]) merge = false;
    if (merge) {
      msh[c] *= o->shape[k];
      continue;
    }
    c++;
    msh[c] = o->shape[k];
    mos[c] = ostride[k];
    for (int e = 0; e < g->n_ext; e++) mst[e][c] = bs[e][k];
  }
  d.ndim = c + 1;
  for (int k = 0; k <= c; k++) d.shape[k] = msh[c - k];
  d.all_dense = 1;
  for (int e = 0; e < g->n_ext; e++) {
    d.ext[e] = A.ext[e];
    int dense = 1;
    for (int k = 0; k <= c; k++) {
      d.stride[e][k] = mst[e][c - k];
      if (mst[e][c - k] != mos[c - k]) dense = 0;
    }
    d.dense[e] = dense;
    d.all_dense &= dense;
  }
  for (int k = 0; k < g->n_ops; k++) {
    const nb_fused_op *f = &g->ops[k];
    ew_op &op = d.ops[k];
    op.op = (int)f->op;
    op.n_src = f->n_src;
    for (int s = 0; s < 3; s++) op.src[s] = s < f->n_src ? f->src[s] : 0;
    for (int p = 0; p < NB_OP_FPARAMS; p++) op.fp[p] = f->fp[p];
    op.ip0 = f->ip0;
  }
  ew_kernel<MO, ME>
      <<<nb_cuda_blocks(cu, d.n, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(d);
  return nb_cuda_launched(cu, A.what);
}

nb_status run_args(nb_cuda *cu, const ew_args &A) {
  const nb_fused_group *g = A.g;
  if (!g)
    return nb_error(NB_ERR_INTERNAL, "%s: elementwise kernel launched without a group", A.what);
  for (int k = 0; k < g->n_ops; k++)
    if (!known_op(g->ops[k].op))
      return nb_error(NB_ERR_UNSUPPORTED, "%s: no CUDA kernel for op %s in an elementwise group",
                      cu->name, nb_op_def_get(g->ops[k].op)->name);
  if (g->n_ops <= 8 && g->n_ext <= 8) return launch<8, 8>(cu, A);
  if (g->n_ops <= 48 && g->n_ext <= 144) return launch<48, 144>(cu, A);
  return nb_error(NB_ERR_UNSUPPORTED,
                  "%s: elementwise group of %d ops and %d inputs is too large "
                  "(at most 48 and 144)",
                  cu->name, g->n_ops, g->n_ext);
}

nb_status run_group(nb_cuda *cu, const nb_kernel_call *c) {
  ew_args A;
  memset(&A, 0, sizeof A);
  A.g = c->group;
  A.shape = c->node;
  A.out = static_cast<float *>(c->out);
  A.step = c->step;
  A.step_at = c->step_at;
  A.what = nb_cuda_op_name(c->node);
  if (A.g && (A.g->n_ext > 160 || c->n_in < A.g->n_ext))
    return nb_error(NB_ERR_INTERNAL, "%s: group with %d inputs, call with %d", A.what, A.g->n_ext,
                    c->n_in);
  for (int e = 0; A.g && e < A.g->n_ext; e++) A.ext[e] = static_cast<const float *>(c->in[e]);
  return run_args(cu, A);
}

nb_status check_elementwise(nb_cuda *cu, const nb_tensor *node) {
  if (!known_op(node->op))
    return nb_error(NB_ERR_UNSUPPORTED, "%s has no kernel for op %s", cu->name,
                    nb_cuda_op_name(node));
  if (node->dtype != NB_F32)
    return nb_error(NB_ERR_DTYPE, "%s: op %s in %s, the CUDA kernels compute in f32", cu->name,
                    nb_cuda_op_name(node), nb_dtype_name(node->dtype));
  return NB_OK;
}

} // namespace

nb_status nb_cuda_epilogue(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *prod = c->node;
  const nb_fused_group *g = c->group;
  ew_args A;
  memset(&A, 0, sizeof A);
  A.g = g;
  A.shape = prod;
  A.out = static_cast<float *>(c->out);
  A.step = c->step;
  A.step_at = c->step_at;
  A.what = nb_cuda_op_name(prod);
  if (g->n_ext > 160 || c->n_in != prod->n_in + g->n_ext)
    return nb_error(NB_ERR_INTERNAL, "%s: epilogue with %d inputs, want %d", A.what, c->n_in,
                    prod->n_in + g->n_ext);
  int found = 0;
  for (int e = 0; e < g->n_ext; e++) {
    if (g->ext[e] == prod) {
      /* read in place: a thread reads element i of every input before it
       * writes element i, and no other thread touches element i */
      A.ext[e] = A.out;
      A.is_out[e] = 1;
      found = 1;
    } else {
      A.ext[e] = static_cast<const float *>(c->in[prod->n_in + e]);
    }
  }
  if (!found) return nb_error(NB_ERR_INTERNAL, "%s: epilogue group does not read it", A.what);
  return run_args(cu, A);
}

void nb_cuda_register_elementwise(nb_cuda_kernel_entry *t) {
  for (int op = 0; op < NB_OP_COUNT; op++)
    if (nb_op_def_get((nb_opcode)op)->fusion == NB_FUSE_ELEMWISE && known_op(op)) {
      t[op].run = run_group;
      t[op].check = check_elementwise;
    }
}
