/* Fused elementwise engine. Every elementwise node runs as a group of one or
 * more ops: the output index space is cut into tiles; for each tile the
 * external inputs are read (broadcast and strided views gathered), the ops
 * are evaluated tile-wise in cache-resident buffers, and only the last
 * result is written. A lone op is simply a group of one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_num_threads(void) { return 1; }
static int omp_get_thread_num(void) { return 0; }
#endif

#include "cpu_internal.h"
#include "cpu_vmath.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#define TILE 512
/* A group has at most 3 inputs per op and at most 48 ops (fuse.c). */
#define NB_MAX_FUSED_EXT 144

typedef struct {
  /* per external input: broadcast strides over the output shape */
  int64_t stride[NB_MAX_DIMS];
  int dense;  /* same shape as output and contiguous: read in place */
  int scalar; /* one element broadcast everywhere */
  /* the same walk with adjacent axes merged where the input allows (a
   * contiguous input is one axis, a [1, C, 1, 1] bias broadcast over H and W
   * is two), so that gathers copy or fill long runs */
  int cnd;
  int64_t cshape[NB_MAX_DIMS], cstride[NB_MAX_DIMS];
} ext_layout;

static void layout_of(const nb_tensor *x, const nb_tensor *out, ext_layout *l) {
  int lead = out->ndim - x->ndim;
  int dense = x->ndim == out->ndim, scalar = 1;
  for (int d = 0; d < out->ndim; d++) {
    int j = d - lead;
    int64_t s = (j < 0 || x->shape[j] == 1) ? 0 : x->stride[j];
    l->stride[d] = s;
    if (s != 0) scalar = 0;
    if (j >= 0 && x->shape[j] != out->shape[d]) dense = 0;
  }
  l->dense = dense && nb_tensor_is_contiguous(x);
  l->scalar = scalar;
  /* merge from the innermost axis outwards; axes of size 1 vanish */
  int c = -1;
  for (int d = out->ndim - 1; d >= 0; d--) {
    int64_t n = out->shape[d], s = l->stride[d];
    if (n == 1) continue;
    if (c >= 0 && s == l->cstride[c] * l->cshape[c]) {
      l->cshape[c] *= n;
      continue;
    }
    c++;
    l->cshape[c] = n;
    l->cstride[c] = s;
  }
  /* stored innermost first above; flip to row-major order */
  l->cnd = c + 1;
  for (int a = 0, b = c; a < b; a++, b--) {
    int64_t t = l->cshape[a];
    l->cshape[a] = l->cshape[b], l->cshape[b] = t;
    t = l->cstride[a];
    l->cstride[a] = l->cstride[b], l->cstride[b] = t;
  }
}

/* dst[0, n) = elements [start, start + n) of the output's index space, read
 * through the input's (merged) strides, run by run along the inner axis. */
static void gather_tile(const float *src, const ext_layout *l, int64_t start, int64_t n,
                        float *dst) {
  int nd = l->cnd;
  const int64_t *shape = l->cshape, *stride = l->cstride;
  int64_t idx[NB_MAX_DIMS], off = 0, rem = start;
  for (int d = nd - 1; d >= 0; d--) {
    idx[d] = shape[d] ? rem % shape[d] : 0;
    rem = shape[d] ? rem / shape[d] : 0;
    off += idx[d] * stride[d];
  }
  int64_t inner = nd ? shape[nd - 1] : 1, is = nd ? stride[nd - 1] : 0;
  int64_t i = 0;
  while (i < n) {
    /* run along the innermost axis */
    int64_t run = nd ? inner - idx[nd - 1] : n - i;
    if (run > n - i) run = n - i;
    if (is == 1)
      memcpy(dst + i, src + off, (size_t)run * sizeof(float));
    else if (is == 0)
      for (int64_t k = 0; k < run; k++) dst[i + k] = src[off];
    else
      for (int64_t k = 0; k < run; k++) dst[i + k] = src[off + k * is];
    i += run;
    if (nd == 0) break;
    off += run * is;
    idx[nd - 1] += run;
    for (int d = nd - 1; d > 0 && idx[d] >= shape[d]; d--) {
      off -= idx[d] * stride[d];
      idx[d] = 0;
      idx[d - 1]++;
      off += stride[d - 1];
    }
  }
}

static inline float gelu_exact(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

static inline float gelu_exact_grad(float x) {
  float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
  float pdf = 0.3989422804014327f * expf(-0.5f * x * x);
  return cdf + x * pdf;
}

/* y = sqrt(a) (recip: 1 / sqrt(a)). A sqrtf loop stays scalar because
 * sqrtf sets errno for negative input (GCC needs -fno-math-errno to
 * vectorise it), which made sqrt 40% of Adam's update. SSE's sqrtps rounds
 * the same (IEEE square root, correctly rounded) and gives the same NaN for
 * negative input as sqrtss, which sqrtf uses. */
static inline void sqrt_run(float *y, const float *a, int64_t n, int recip) {
  int64_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
  const __m128 one = _mm_set1_ps(1.0f);
  for (; i + 4 <= n; i += 4) {
    __m128 r = _mm_sqrt_ps(_mm_loadu_ps(a + i));
    _mm_storeu_ps(y + i, recip ? _mm_div_ps(one, r) : r);
  }
#endif
  for (; i < n; i++) y[i] = recip ? 1.0f / sqrtf(a[i]) : sqrtf(a[i]);
}

NB_CPU_CLONES static void eval_op(const nb_fused_op *op, const float *a, const float *b,
                                  const float *c, float *y, int64_t n, int64_t start,
                                  uint64_t step) {
  int64_t i;
  switch (op->op) {
  case NB_OP_ADD:
    for (i = 0; i < n; i++) y[i] = a[i] + b[i];
    break;
  case NB_OP_SUB:
    for (i = 0; i < n; i++) y[i] = a[i] - b[i];
    break;
  case NB_OP_MUL:
    for (i = 0; i < n; i++) y[i] = a[i] * b[i];
    break;
  case NB_OP_DIV:
    for (i = 0; i < n; i++) y[i] = a[i] / b[i];
    break;
  case NB_OP_POW:
    for (i = 0; i < n; i++) y[i] = powf(a[i], b[i]);
    break;
  case NB_OP_MAXIMUM:
    for (i = 0; i < n; i++) y[i] = (a[i] != a[i] || a[i] > b[i]) ? a[i] : b[i];
    break;
  case NB_OP_MINIMUM:
    for (i = 0; i < n; i++) y[i] = (a[i] != a[i] || a[i] < b[i]) ? a[i] : b[i];
    break;
  case NB_OP_EQ:
    for (i = 0; i < n; i++) y[i] = a[i] == b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_NE:
    for (i = 0; i < n; i++) y[i] = a[i] != b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_LT:
    for (i = 0; i < n; i++) y[i] = a[i] < b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_LE:
    for (i = 0; i < n; i++) y[i] = a[i] <= b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_GT:
    for (i = 0; i < n; i++) y[i] = a[i] > b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_GE:
    for (i = 0; i < n; i++) y[i] = a[i] >= b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_GELU_BWD:
    /* two loops: the tanh form vectorises, erff does not */
    if (op->ip0)
      for (i = 0; i < n; i++) y[i] = b[i] * nb_vgelu_tanh_gradf(a[i]);
    else
      for (i = 0; i < n; i++) y[i] = b[i] * gelu_exact_grad(a[i]);
    break;
  case NB_OP_WHERE:
    for (i = 0; i < n; i++) y[i] = a[i] != 0.0f ? b[i] : c[i];
    break;
  case NB_OP_NEG:
    for (i = 0; i < n; i++) y[i] = -a[i];
    break;
  case NB_OP_ABS:
    for (i = 0; i < n; i++) y[i] = fabsf(a[i]);
    break;
  case NB_OP_SIGN:
    for (i = 0; i < n; i++) y[i] = (float)(a[i] > 0.0f) - (float)(a[i] < 0.0f);
    break;
  case NB_OP_EXP:
    for (i = 0; i < n; i++) y[i] = nb_vexpf(a[i]);
    break;
  case NB_OP_LOG:
    for (i = 0; i < n; i++) y[i] = logf(a[i]);
    break;
  case NB_OP_SQRT: sqrt_run(y, a, n, 0); break;
  case NB_OP_RSQRT: sqrt_run(y, a, n, 1); break;
  case NB_OP_SQUARE:
    for (i = 0; i < n; i++) y[i] = a[i] * a[i];
    break;
  case NB_OP_RECIPROCAL:
    for (i = 0; i < n; i++) y[i] = 1.0f / a[i];
    break;
  case NB_OP_TANH:
    for (i = 0; i < n; i++) y[i] = nb_vtanhf(a[i]);
    break;
  case NB_OP_ERF:
    for (i = 0; i < n; i++) y[i] = erff(a[i]);
    break;
  case NB_OP_SIGMOID:
    for (i = 0; i < n; i++) y[i] = nb_vsigmoidf(a[i]);
    break;
  case NB_OP_RELU:
    /* NaN passes through (like PyTorch) so a diverging run is not masked */
    for (i = 0; i < n; i++) y[i] = a[i] > 0.0f || a[i] != a[i] ? a[i] : 0.0f;
    break;
  case NB_OP_LEAKY_RELU:
    for (i = 0; i < n; i++) y[i] = a[i] > 0.0f ? a[i] : a[i] * op->fp[0];
    break;
  case NB_OP_GELU:
    if (op->ip0)
      for (i = 0; i < n; i++) y[i] = nb_vgelu_tanhf(a[i]);
    else
      for (i = 0; i < n; i++) y[i] = gelu_exact(a[i]);
    break;
  case NB_OP_SILU:
    for (i = 0; i < n; i++) y[i] = a[i] / (1.0f + nb_vexpf(-a[i]));
    break;
  case NB_OP_SOFTPLUS: {
    float beta = op->fp[0], thr = op->fp[1];
    for (i = 0; i < n; i++) {
      float bx = beta * a[i];
      y[i] = bx > thr ? a[i] : log1pf(expf(bx)) / beta;
    }
    break;
  }
  case NB_OP_CLAMP: {
    float lo = op->fp[0], hi = op->fp[1];
    for (i = 0; i < n; i++) y[i] = a[i] < lo ? lo : a[i] > hi ? hi : a[i];
    break;
  }
  case NB_OP_DROPOUT: {
    float p = op->fp[0], scale = 1.0f / (1.0f - p);
    uint64_t seed = (uint64_t)op->ip0 ^ (step * 0x9e3779b97f4a7c15ull);
    for (i = 0; i < n; i++)
      y[i] = nb_hash_uniform(seed, (uint64_t)(start + i)) < p ? 0.0f : a[i] * scale;
    break;
  }
  default: break;
  }
}

static int supported(nb_opcode op) { return nb_op_def_get(op)->fusion == NB_FUSE_ELEMWISE; }

/* Below this many elements a group runs on the calling thread: waking the
 * OpenMP team costs more than the loop (a dozen small launches per step
 * update biases and optimizer moments). */
#define PAR_MIN ((int64_t)1 << 15)
/* Tile buffers live on the thread's stack up to this many slots (48 KB), so
 * a launch allocates nothing; larger groups fall back to malloc. */
#define STACK_SLOTS 24
/* Blocked tiles: BR rows x BC columns of the last two axes. */
#define BR 16
#define BC (TILE / BR)

/* How a group walks its output. Linear: tiles of TILE consecutive elements.
 * Blocked: BR x BC tiles of the last two axes, chosen when an input is read
 * transposed (stride 1 along rows, a long stride along columns, as the
 * gradient of a Linear weight is): a linear tile would touch a cache line
 * per element, a blocked one reads BR consecutive floats per column. */
typedef struct {
  const nb_kernel_call *c;
  const nb_fused_group *g;
  const nb_tensor *out;
  const ext_layout *lay;
  const float *const *ext; /* data of each external input */
  float *dst;              /* the group's result (dense, shape of out) */
  int64_t first, last;     /* linear: the elements [first, last) */
  int blocked;
  int64_t rows, cols, rtiles, ctiles; /* blocked: last two axes and tile counts */
  int avx2;                           /* blocked: transposed gathers may use AVX2 */
} group_run;

static int is_transposed(const ext_layout *l, int nd) {
  int64_t sc = l->stride[nd - 1], sr = l->stride[nd - 2];
  return sr == 1 && sc != 0 && sc != 1;
}

/* Element offset of (batch b, row r, column 0) in an input. */
static int64_t block_base(const group_run *R, const ext_layout *l, int64_t b, int64_t r) {
  int nd = R->out->ndim;
  return nb_strided_offset(nd - 2, R->out->shape, l->stride, b) + r * l->stride[nd - 2];
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GATHER_AVX2 1
#include "cpu_transpose.h"
/* The transposed gather below by 8x8 blocks in registers (it moved one
 * float per load and store, a third of the time of the Adam update of a
 * Linear weight). */
__attribute__((target("avx2"))) static void t8x8(const float *src, int64_t sld, float *dst,
                                                 int64_t dld) {
  nb_cpu_t8x8(src, sld, dst, dld);
}
#endif

/* dst[i * bc + j] = input(b, r0 + i, c0 + j), walking the smaller stride
 * innermost. */
static void gather_block(const group_run *R, const float *src, const ext_layout *l, int64_t b,
                         int64_t r0, int64_t c0, int64_t br, int64_t bc, float *dst) {
  int nd = R->out->ndim;
  int64_t sr = l->stride[nd - 2], sc = l->stride[nd - 1];
  const float *s0 = src + block_base(R, l, b, r0) + c0 * sc;
  if (sr == 1 && sc != 1) {
    int64_t i8 = 0, j8 = 0;
#ifdef GATHER_AVX2
    /* whole 8x8 blocks in registers, the edges below */
    if (R->avx2) {
      i8 = br / 8 * 8, j8 = bc / 8 * 8;
      for (int64_t i = 0; i < i8; i += 8)
        for (int64_t j = 0; j < j8; j += 8) t8x8(s0 + j * sc + i, sc, dst + i * bc + j, bc);
    }
#endif
    for (int64_t j = 0; j < bc; j++)
      for (int64_t i = j < j8 ? i8 : 0; i < br; i++) dst[i * bc + j] = s0[j * sc + i];
  } else {
    for (int64_t i = 0; i < br; i++)
      for (int64_t j = 0; j < bc; j++) dst[i * bc + j] = s0[i * sr + j * sc];
  }
}

static void run_tiles(const group_run *R, int64_t t0, int64_t t1, float *buf) {
  const nb_fused_group *g = R->g;
  const nb_kernel_call *c = R->c;
  const float *ext[NB_MAX_FUSED_EXT];
  /* a broadcast scalar is the same in every tile: fill its slot once */
  for (int e = 0; e < g->n_ext; e++)
    if (R->lay[e].scalar && !R->lay[e].dense) {
      float *dst = buf + (size_t)(g->n_ops + e) * TILE, v = R->ext[e][0];
      for (int64_t i = 0; i < TILE; i++) dst[i] = v;
    }
  for (int64_t t = t0; t < t1; t++) {
    int64_t start, len, b = 0, r0 = 0, c0 = 0, br = 0, bc = 0;
    if (R->blocked) {
      int64_t per = R->rtiles * R->ctiles;
      b = t / per;
      r0 = (t % per) / R->ctiles * BR;
      c0 = (t % R->ctiles) * BC;
      br = R->rows - r0 < BR ? R->rows - r0 : BR;
      bc = R->cols - c0 < BC ? R->cols - c0 : BC;
      start = 0; /* unused: no dropout in blocked groups */
      len = br * bc;
    } else {
      start = R->first + t * TILE;
      len = R->last - start < TILE ? R->last - start : TILE;
    }
    for (int e = 0; e < g->n_ext; e++) {
      const float *base = R->ext[e];
      float *dst = buf + (size_t)(g->n_ops + e) * TILE;
      ext[e] = dst;
      if (R->lay[e].scalar && !R->lay[e].dense)
        continue;
      else if (R->blocked)
        gather_block(R, base, &R->lay[e], b, r0, c0, br, bc, dst);
      else if (R->lay[e].dense)
        ext[e] = base + start;
      else
        gather_tile(base, &R->lay[e], start, len, dst);
    }
    for (int k = 0; k < g->n_ops; k++) {
      const nb_fused_op *op = &g->ops[k];
      const float *args[3] = {NULL, NULL, NULL};
      for (int s = 0; s < op->n_src; s++)
        args[s] = op->src[s] >= 0 ? ext[op->src[s]] : buf + (size_t)(-op->src[s] - 1) * TILE;
      int last = k == g->n_ops - 1;
      float *y = last && !R->blocked ? R->dst + start : buf + (size_t)k * TILE;
      eval_op(op, args[0], args[1], args[2], y, len, start, c->step_at ? *c->step_at : c->step);
    }
    if (R->blocked) {
      const float *res = buf + (size_t)(g->n_ops - 1) * TILE;
      float *o = R->dst + (b * R->rows + r0) * R->cols + c0;
      for (int64_t i = 0; i < br; i++)
        memcpy(o + i * R->cols, res + i * bc, (size_t)bc * sizeof(float));
    }
  }
}

/* One thread's share of the tiles, with its tile buffers on its stack. */
static int run_share(const group_run *R, int64_t t0, int64_t t1) {
  size_t slots = (size_t)(R->g->n_ops + R->g->n_ext);
  if (slots <= STACK_SLOTS) {
    float buf[STACK_SLOTS * TILE];
    run_tiles(R, t0, t1, buf);
    return 0;
  }
  float *buf = malloc(slots * TILE * sizeof(float));
  if (!buf) return 1;
  run_tiles(R, t0, t1, buf);
  free(buf);
  return 0;
}

static nb_status check_group(const nb_fused_group *g, int *dropout) {
  if (!g) return nb_error(NB_ERR_INTERNAL, "elementwise kernel launched without a group");
  if (g->n_ext > NB_MAX_FUSED_EXT)
    return nb_error(NB_ERR_INTERNAL, "elementwise group with %d inputs", g->n_ext);
  *dropout = 0;
  for (int k = 0; k < g->n_ops; k++) {
    if (!supported(g->ops[k].op))
      return nb_error(NB_ERR_INTERNAL, "op %s in an elementwise group",
                      nb_op_def_get(g->ops[k].op)->name);
    *dropout |= g->ops[k].op == NB_OP_DROPOUT;
  }
  return NB_OK;
}

/* Runs R's tiles on up to nb_cpu_threads() threads (one below PAR_MIN
 * elements), each thread taking a contiguous share. */
static nb_status run_parallel(const group_run *R, int64_t tiles, int64_t n) {
  int nthreads = nb_cpu_threads();
  if (n < PAR_MIN || nthreads <= 1 || tiles < 2) {
    if (run_share(R, 0, tiles)) return nb_error(NB_ERR_OOM, "elementwise: out of memory");
    return NB_OK;
  }
  if (tiles < nthreads) nthreads = (int)tiles;
  int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(max : failed)
  {
    int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    failed |= run_share(R, tiles * id / nt, tiles * (id + 1) / nt);
  }
  return failed ? nb_error(NB_ERR_OOM, "elementwise: out of memory") : NB_OK;
}

static nb_status run_group(const nb_kernel_call *c) {
  const nb_fused_group *g = c->group;
  const nb_tensor *out = c->node;
  int dropout;
  nb_status st = check_group(g, &dropout);
  if (st) return st;
  int64_t n = nb_tensor_numel(out);
  if (n == 0) return NB_OK;
  ext_layout lay[NB_MAX_FUSED_EXT];
  group_run R = {.c = c,
                 .g = g,
                 .out = out,
                 .lay = lay,
                 .ext = (const float *const *)c->in,
                 .dst = c->out,
                 .first = 0,
                 .last = n};
  for (int e = 0; e < g->n_ext; e++) {
    layout_of(g->ext[e], out, &lay[e]);
    if (out->ndim >= 2 && !dropout && is_transposed(&lay[e], out->ndim)) R.blocked = 1;
  }
  int64_t tiles = (n + TILE - 1) / TILE;
  if (R.blocked) {
#ifdef GATHER_AVX2
    R.avx2 = __builtin_cpu_supports("avx2");
#endif
    R.rows = out->shape[out->ndim - 2];
    R.cols = out->shape[out->ndim - 1];
    R.rtiles = (R.rows + BR - 1) / BR;
    R.ctiles = (R.cols + BC - 1) / BC;
    tiles = n / (R.rows * R.cols) * R.rtiles * R.ctiles;
  }
  return run_parallel(&R, tiles, n);
}

/* ---- epilogues: a group run by the kernel that produces one of its inputs ---- */

/* The producer's values are already in the group's result buffer; they are
 * read from there and replaced by the group's result. */
static nb_status epilogue_setup(const nb_kernel_call *c, ext_layout *lay, const float **ext,
                                group_run *R) {
  const nb_fused_group *g = c->group;
  int dropout;
  nb_status st = check_group(g, &dropout);
  if (st) return st;
  const nb_tensor *prod = c->node;
  if (c->n_in != prod->n_in + g->n_ext)
    return nb_error(NB_ERR_INTERNAL, "%s: epilogue with %d inputs, want %d",
                    nb_op_def_get(prod->op)->name, c->n_in, prod->n_in + g->n_ext);
  /* the group's shape: any input other than the producer has at most it */
  const nb_tensor *shape = prod;
  *R = (group_run){.c = c, .g = g, .out = shape, .lay = lay, .ext = ext, .dst = c->out};
  int found = 0;
  for (int e = 0; e < g->n_ext; e++) {
    layout_of(g->ext[e], shape, &lay[e]);
    ext[e] = c->in[prod->n_in + e];
    if (g->ext[e] == prod) {
      ext[e] = c->out;
      /* read in place: every op reads element i before the last op writes
       * element i, and only the last op writes to the result */
      lay[e].dense = 1;
      found = 1;
    }
  }
  if (!found)
    return nb_error(NB_ERR_INTERNAL, "%s: epilogue group does not read it",
                    nb_op_def_get(prod->op)->name);
  return NB_OK;
}

nb_status nb_cpu_epilogue(const nb_kernel_call *c, int64_t start, int64_t len) {
  ext_layout lay[NB_MAX_FUSED_EXT];
  const float *ext[NB_MAX_FUSED_EXT];
  group_run R;
  nb_status st = epilogue_setup(c, lay, ext, &R);
  if (st || len <= 0) return st;
  R.first = start;
  R.last = start + len;
  if (run_share(&R, 0, (len + TILE - 1) / TILE))
    return nb_error(NB_ERR_OOM, "epilogue: out of memory");
  return NB_OK;
}

nb_status nb_cpu_epilogue_all(const nb_kernel_call *c) {
  ext_layout lay[NB_MAX_FUSED_EXT];
  const float *ext[NB_MAX_FUSED_EXT];
  group_run R;
  nb_status st = epilogue_setup(c, lay, ext, &R);
  int64_t n = nb_tensor_numel(c->node);
  if (st || n == 0) return st;
  R.first = 0;
  R.last = n;
  return run_parallel(&R, (n + TILE - 1) / TILE, n);
}

void nb_cpu_register_elementwise(nb_cpu_kernel_entry *t) {
  for (int op = 0; op < NB_OP_COUNT; op++)
    if (supported((nb_opcode)op)) t[op].run = run_group;
}
