/* 2-D convolution (NCHW, grouped, strided, dilated) and its two gradients
 * on the GPU.
 *
 * With cuDNN (built with NABLA_CUDNN, the default where it is found) each
 * distinct convolution gets its descriptors and an algorithm once, when a
 * plan is compiled (a cuDNN failure then stops nb_compile), and keeps them in
 * a per-device cache keyed by op and geometry: later plans of the same shape
 * (eval, partial batches) reuse them, and a run does no setup at all.
 * The algorithm is cuDNN's heuristic choice (cudnnGet*_v7), or measured
 * (cudnnFind*) with NABLA_CUDNN_FIND=1, among those that need at most
 * NABLA_CUDNN_WORKSPACE_MB of workspace (default 256). The math is plain
 * FP32 (CUDNN_FMA_MATH) unless NABLA_TF32=1 allows TF32 tensor cores.
 *
 * Without cuDNN (not built, cudnnCreate failing at run time, or a shape it
 * cannot run) nabla's own kernels run: direct loops, a thread per output
 * element (a block per weight element for the weight gradient). They are
 * correct for every geometry the graph accepts but much slower;
 * NABLA_CONV=direct forces them, to compare or to bisect.
 *
 * Mixed precision (graph.h, nb_graph_set_autocast): bf16 or f16 operands
 * run in cuDNN's PSEUDO_BFLOAT16 / PSEUDO_HALF configurations (x, w, y all
 * of the half dtype, f32 compute, tensor cores allowed). cuDNN writes no
 * f32 output from half inputs, so the result lands in the workspace in the
 * half dtype and is widened into the f32 output, as torch.autocast's
 * bf16 convolution output would be when cast back to f32. The direct
 * kernels take half operands by widening them to f32 in the workspace. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <new>
#include <vector>

#ifdef NABLA_WITH_CUDNN
#include <cudnn.h>
#endif

#include "cuda_internal.h"

namespace {

/* ip[] layout, as written by src/graph/ops_conv.c */
enum { CV_STRIDE = 0, CV_PAD = 2, CV_DIL = 4, CV_GROUPS = 6, CV_X = 7, CV_W = 11 };

struct conv_geom {
  int64_t n, c, h, w;  /* input */
  int64_t k, cg, r, s; /* weight [k, cg, r, s] */
  int64_t p, q;        /* output spatial size */
  int64_t groups, kg;  /* groups, output channels per group */
  int64_t sh, sw, ph, pw, dh, dw;
};

/* The output size comes from the dy-shaped tensor, like the CPU kernels. */
conv_geom geom_of(const nb_tensor *node) {
  const int64_t *ip = node->ip, *x = ip + CV_X, *w = ip + CV_W;
  const nb_tensor *yt = node->op == NB_OP_CONV2D             ? node
                        : node->op == NB_OP_CONV2D_BWD_INPUT ? node->in[0]
                                                             : node->in[1];
  conv_geom g;
  g.n = x[0], g.c = x[1], g.h = x[2], g.w = x[3];
  g.k = w[0], g.cg = w[1], g.r = w[2], g.s = w[3];
  g.p = yt->shape[2], g.q = yt->shape[3];
  g.groups = ip[CV_GROUPS];
  g.kg = g.groups ? g.k / g.groups : 0;
  g.sh = ip[CV_STRIDE], g.sw = ip[CV_STRIDE + 1];
  g.ph = ip[CV_PAD], g.pw = ip[CV_PAD + 1];
  g.dh = ip[CV_DIL], g.dw = ip[CV_DIL + 1];
  return g;
}

/* ---- nabla's own kernels ------------------------------------------------------------ */

__global__ void direct_fwd(const float *x, const float *wt, conv_geom g, float *y, int64_t total) {
  NB_CUDA_GRID_STRIDE(i, total) {
    int64_t q = i % g.q, p = (i / g.q) % g.p, k = (i / (g.q * g.p)) % g.k;
    int64_t n = i / (g.q * g.p * g.k);
    int64_t gi = k / g.kg;
    float acc = 0.0f;
    for (int64_t c = 0; c < g.cg; c++) {
      const float *xc = x + ((n * g.c + gi * g.cg + c) * g.h) * g.w;
      const float *wc = wt + ((k * g.cg + c) * g.r) * g.s;
      for (int64_t r = 0; r < g.r; r++) {
        int64_t hi = p * g.sh + r * g.dh - g.ph;
        if (hi < 0 || hi >= g.h) continue;
        for (int64_t s = 0; s < g.s; s++) {
          int64_t wi = q * g.sw + s * g.dw - g.pw;
          if (wi < 0 || wi >= g.w) continue;
          acc += xc[hi * g.w + wi] * wc[r * g.s + s];
        }
      }
    }
    y[i] = acc;
  }
}

__global__ void direct_bwd_input(const float *dy, const float *wt, conv_geom g, float *dx,
                                 int64_t total) {
  NB_CUDA_GRID_STRIDE(i, total) {
    int64_t wi = i % g.w, hi = (i / g.w) % g.h, ci = (i / (g.w * g.h)) % g.c;
    int64_t n = i / (g.w * g.h * g.c);
    int64_t gi = ci / g.cg, c = ci % g.cg;
    float acc = 0.0f;
    for (int64_t kk = 0; kk < g.kg; kk++) {
      int64_t k = gi * g.kg + kk;
      const float *dyk = dy + ((n * g.k + k) * g.p) * g.q;
      const float *wc = wt + ((k * g.cg + c) * g.r) * g.s;
      for (int64_t r = 0; r < g.r; r++) {
        int64_t t = hi + g.ph - r * g.dh;
        if (t < 0 || t % g.sh) continue;
        int64_t p = t / g.sh;
        if (p >= g.p) continue;
        for (int64_t s = 0; s < g.s; s++) {
          int64_t u = wi + g.pw - s * g.dw;
          if (u < 0 || u % g.sw) continue;
          int64_t q = u / g.sw;
          if (q >= g.q) continue;
          acc += dyk[p * g.q + q] * wc[r * g.s + s];
        }
      }
    }
    dx[i] = acc;
  }
}

/* A block per weight element; its threads share the sum over N * P * Q. */
__global__ void direct_bwd_weight(const float *x, const float *dy, conv_geom g, float *dw,
                                  int64_t total) {
  for (int64_t e = blockIdx.x; e < total; e += gridDim.x) {
    int64_t s = e % g.s, r = (e / g.s) % g.r, c = (e / (g.s * g.r)) % g.cg;
    int64_t k = e / (g.s * g.r * g.cg);
    int64_t ci = (k / g.kg) * g.cg + c;
    int64_t pq = g.p * g.q, m = g.n * pq;
    float acc = 0.0f;
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
      int64_t n = j / pq, p = (j / g.q) % g.p, q = j % g.q;
      int64_t hi = p * g.sh + r * g.dh - g.ph, wi = q * g.sw + s * g.dw - g.pw;
      if (hi < 0 || hi >= g.h || wi < 0 || wi >= g.w) continue;
      acc += dy[((n * g.k + k) * g.p + p) * g.q + q] * x[((n * g.c + ci) * g.h + hi) * g.w + wi];
    }
    acc = nb_block_reduce(acc, 0);
    if (threadIdx.x == 0) dw[e] = acc;
  }
}

bool is_half(nb_dtype dt) { return dt == NB_BF16 || dt == NB_F16; }

size_t round256(size_t n) { return (n + 255u) & ~(size_t)255u; }

/* Workspace the direct kernels need for half operands: both widened to f32. */
size_t half_direct_bytes(const nb_tensor *node) {
  if (!is_half(node->in[0]->dtype)) return 0;
  return round256((size_t)nb_tensor_numel(node->in[0]) * sizeof(float)) +
         round256((size_t)nb_tensor_numel(node->in[1]) * sizeof(float));
}

nb_status run_direct(nb_cuda *cu, const nb_kernel_call *c, const conv_geom &g) {
  const nb_tensor *node = c->node;
  const float *a = static_cast<const float *>(c->in[0]), *b = static_cast<const float *>(c->in[1]);
  float *out = static_cast<float *>(c->out);
  int64_t total = nb_tensor_numel(node);
  if (total == 0) return NB_OK;
  if (is_half(node->in[0]->dtype)) {
    /* half operands: f32 copies in the workspace, then the f32 kernels */
    size_t need = half_direct_bytes(node);
    if (c->workspace_bytes < need)
      return nb_error(NB_ERR_INTERNAL, "%s: %s: workspace of %zu bytes, half operands need %zu",
                      cu->name, nb_cuda_op_name(node), c->workspace_bytes, need);
    float *wa = static_cast<float *>(c->workspace);
    float *wb = reinterpret_cast<float *>(static_cast<char *>(c->workspace) +
                                          round256((size_t)nb_tensor_numel(node->in[0]) * 4));
    nb_status st = nb_cuda_strided_copy(cu, node->in[0], c->in[0], wa, NB_F32, "conv: widen");
    if (!st) st = nb_cuda_strided_copy(cu, node->in[1], c->in[1], wb, NB_F32, "conv: widen");
    if (st) return st;
    a = wa;
    b = wb;
  }
  switch (node->op) {
  case NB_OP_CONV2D:
    direct_fwd<<<nb_cuda_blocks(cu, total, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(
        a, b, g, out, total);
    break;
  case NB_OP_CONV2D_BWD_INPUT:
    direct_bwd_input<<<nb_cuda_blocks(cu, total, NB_CUDA_THREADS), NB_CUDA_THREADS, 0,
                       cu->stream>>>(a, b, g, out, total);
    break;
  default: {
    unsigned blocks = (unsigned)(total < (int64_t)1 << 30 ? total : (int64_t)1 << 30);
    direct_bwd_weight<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(a, b, g, out, total);
    break;
  }
  }
  return nb_cuda_launched(cu, nb_cuda_op_name(node));
}

} // namespace

/* ---- cuDNN ---------------------------------------------------------------------------- */

#ifdef NABLA_WITH_CUDNN

namespace {

const int KEY_LEN = 19;

/* cuDNN rejects empty tensors; the direct kernels handle them */
bool any_empty(const conv_geom &g) {
  return g.n == 0 || g.c == 0 || g.k == 0 || g.p == 0 || g.q == 0 || g.h == 0 || g.w == 0 ||
         g.r == 0 || g.s == 0;
}

bool force_direct() {
  const char *e = getenv("NABLA_CONV");
  return e && !strcmp(e, "direct");
}

bool verbose() {
  const char *e = getenv("NABLA_CUDA_VERBOSE");
  return e && *e && strcmp(e, "0") != 0;
}

struct conv_entry {
  int64_t key[KEY_LEN];
  bool direct;
  int algo;
  size_t ws;
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
};

void key_of(const nb_tensor *node, const conv_geom &g, int64_t *key) {
  int64_t v[KEY_LEN] = {node->op, g.n,  g.c,  g.h,  g.w,  g.k,  g.cg, g.r,      g.s, g.p,
                        g.q,      g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups, 0};
  v[KEY_LEN - 1] = node->in[0]->dtype; /* f32 or a half type: other descriptors */
  memcpy(key, v, sizeof v);
}

} // namespace

struct nb_cuda_dnn {
  cudnnHandle_t h = nullptr;
  bool tried = false; /* cudnnCreate was attempted */
  std::vector<conv_entry *> cache;
};

namespace {

nb_status dnn_fail(nb_cuda *cu, cudnnStatus_t s, const char *op, const char *what) {
  char detail[512] = "";
#if CUDNN_MAJOR >= 9 /* the library's own account of the failure */
  cudnnGetLastErrorString(detail, sizeof detail);
#endif
  return nb_error(s == CUDNN_STATUS_ALLOC_FAILED ? NB_ERR_OOM : NB_ERR_INTERNAL,
                  "%s: %s: %s failed: %s%s%s", cu->name, op, what, cudnnGetErrorString(s),
                  detail[0] ? ": " : "", detail);
}

/* The cuDNN handle, or NULL when cuDNN cannot be used on this machine. */
cudnnHandle_t dnn_handle(nb_cuda *cu) {
  if (!cu->dnn) {
    cu->dnn = new (std::nothrow) nb_cuda_dnn();
    if (!cu->dnn) return nullptr;
  }
  nb_cuda_dnn *d = cu->dnn;
  if (!d->tried) {
    d->tried = true;
    cudnnHandle_t h;
    cudnnStatus_t s = cudnnCreate(&h);
    if (s == CUDNN_STATUS_SUCCESS && cudnnSetStream(h, cu->stream) == CUDNN_STATUS_SUCCESS) {
      d->h = h;
    } else {
      if (s == CUDNN_STATUS_SUCCESS) cudnnDestroy(h);
      /* not fatal: nabla's own kernels run every convolution */
      if (verbose())
        fprintf(stderr, "nabla: %s: cuDNN unavailable (%s); using nabla's conv kernels\n", cu->name,
                cudnnGetErrorString(s));
    }
  }
  return d->h;
}

size_t workspace_limit() {
  const char *e = getenv("NABLA_CUDNN_WORKSPACE_MB");
  long mb = e ? strtol(e, nullptr, 10) : 256;
  return (size_t)(mb > 0 ? mb : 0) << 20;
}

bool measure() {
  const char *e = getenv("NABLA_CUDNN_FIND");
  return e && !strcmp(e, "1");
}

/* First usable algorithm of a perf list (best first): it ran (status) and
 * fits the workspace limit. With TF32 allowed the descriptor takes the
 * algorithm's math type; otherwise it stays CUDNN_FMA_MATH, which keeps the
 * arithmetic FP32 (an algorithm that cannot run so reports NOT_SUPPORTED,
 * and the direct kernels take over). */
template <typename Perf>
int pick(nb_cuda *cu, cudnnConvolutionDescriptor_t cd, const Perf *perf, int n, size_t limit,
         bool half) {
  for (int i = 0; i < n; i++) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > limit) continue;
    /* half operands: whatever math the algorithm wants (tensor cores) */
    if (cu->tf32 || half) cudnnSetConvolutionMathType(cd, perf[i].mathType);
    return i;
  }
  return -1;
}

void destroy_entry(conv_entry *e) {
  if (e->xd) cudnnDestroyTensorDescriptor(e->xd);
  if (e->yd) cudnnDestroyTensorDescriptor(e->yd);
  if (e->wd) cudnnDestroyFilterDescriptor(e->wd);
  if (e->cd) cudnnDestroyConvolutionDescriptor(e->cd);
  delete e;
}

/* Descriptors and algorithm for the node; e->direct when cuDNN cannot or
 * may not run it. A cuDNN error other than "not supported" is returned. */
nb_status setup(nb_cuda *cu, cudnnHandle_t h, const nb_tensor *node, const conv_geom &g,
                conv_entry *e) {
  const char *op = nb_cuda_op_name(node);
  /* x, w and y share the operands' dtype; the compute type stays f32 */
  nb_dtype odt = node->in[0]->dtype;
  bool half = is_half(odt);
  cudnnDataType_t dt = odt == NB_BF16  ? CUDNN_DATA_BFLOAT16
                       : odt == NB_F16 ? CUDNN_DATA_HALF
                                       : CUDNN_DATA_FLOAT;
  cudnnStatus_t s = cudnnCreateTensorDescriptor(&e->xd);
  if (!s) s = cudnnCreateTensorDescriptor(&e->yd);
  if (!s) s = cudnnCreateFilterDescriptor(&e->wd);
  if (!s) s = cudnnCreateConvolutionDescriptor(&e->cd);
  if (s) return dnn_fail(cu, s, op, "creating descriptors");
  s = cudnnSetTensor4dDescriptor(e->xd, CUDNN_TENSOR_NCHW, dt, (int)g.n, (int)g.c, (int)g.h,
                                 (int)g.w);
  if (!s)
    s = cudnnSetTensor4dDescriptor(e->yd, CUDNN_TENSOR_NCHW, dt, (int)g.n, (int)g.k, (int)g.p,
                                   (int)g.q);
  if (!s)
    s = cudnnSetFilter4dDescriptor(e->wd, dt, CUDNN_TENSOR_NCHW, (int)g.k, (int)g.cg, (int)g.r,
                                   (int)g.s);
  if (!s)
    s = cudnnSetConvolution2dDescriptor(e->cd, (int)g.ph, (int)g.pw, (int)g.sh, (int)g.sw,
                                        (int)g.dh, (int)g.dw, CUDNN_CROSS_CORRELATION,
                                        CUDNN_DATA_FLOAT);
  if (!s) s = cudnnSetConvolutionGroupCount(e->cd, (int)g.groups);
  if (!s)
    s = cudnnSetConvolutionMathType(e->cd, cu->tf32 || half ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH);
  if (s == CUDNN_STATUS_NOT_SUPPORTED || s == CUDNN_STATUS_BAD_PARAM) {
    e->direct = true; /* e.g. a dimension cuDNN's int descriptors cannot hold */
    return NB_OK;
  }
  if (s) return dnn_fail(cu, s, op, "setting descriptors");
  /* the graph's output size must be cuDNN's, or the kernels disagree */
  int on, oc, oh, ow;
  s = cudnnGetConvolution2dForwardOutputDim(e->cd, e->xd, e->wd, &on, &oc, &oh, &ow);
  if (s || on != g.n || oc != g.k || oh != g.p || ow != g.q) {
    e->direct = true;
    return NB_OK;
  }
  size_t limit = workspace_limit();
  const int MAXA = 16;
  int got = 0, i = -1;
  bool find = measure();
  if (node->op == NB_OP_CONV2D) {
    cudnnConvolutionFwdAlgoPerf_t perf[MAXA];
    s = find ? cudnnFindConvolutionForwardAlgorithm(h, e->xd, e->wd, e->cd, e->yd, MAXA, &got, perf)
             : cudnnGetConvolutionForwardAlgorithm_v7(h, e->xd, e->wd, e->cd, e->yd, MAXA, &got,
                                                      perf);
    if (!s && (i = pick(cu, e->cd, perf, got, limit, half)) >= 0) {
      e->algo = perf[i].algo;
      s = cudnnGetConvolutionForwardWorkspaceSize(h, e->xd, e->wd, e->cd, e->yd, perf[i].algo,
                                                  &e->ws);
    }
  } else if (node->op == NB_OP_CONV2D_BWD_INPUT) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[MAXA];
    s = find ? cudnnFindConvolutionBackwardDataAlgorithm(h, e->wd, e->yd, e->cd, e->xd, MAXA, &got,
                                                         perf)
             : cudnnGetConvolutionBackwardDataAlgorithm_v7(h, e->wd, e->yd, e->cd, e->xd, MAXA,
                                                           &got, perf);
    if (!s && (i = pick(cu, e->cd, perf, got, limit, half)) >= 0) {
      e->algo = perf[i].algo;
      s = cudnnGetConvolutionBackwardDataWorkspaceSize(h, e->wd, e->yd, e->cd, e->xd, perf[i].algo,
                                                       &e->ws);
    }
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[MAXA];
    s = find ? cudnnFindConvolutionBackwardFilterAlgorithm(h, e->xd, e->yd, e->cd, e->wd, MAXA,
                                                           &got, perf)
             : cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, e->xd, e->yd, e->cd, e->wd, MAXA,
                                                             &got, perf);
    if (!s && (i = pick(cu, e->cd, perf, got, limit, half)) >= 0) {
      e->algo = perf[i].algo;
      s = cudnnGetConvolutionBackwardFilterWorkspaceSize(h, e->xd, e->yd, e->cd, e->wd,
                                                         perf[i].algo, &e->ws);
    }
  }
  if (s == CUDNN_STATUS_NOT_SUPPORTED || (!s && i < 0)) {
    e->direct = true;
    e->ws = 0;
  } else if (s) {
    return dnn_fail(cu, s, op, find ? "finding an algorithm" : "choosing an algorithm");
  }
  if (verbose())
    fprintf(stderr,
            "nabla: %s: %s %s x [%lld, %lld, %lld, %lld] w [%lld, %lld, %lld, %lld]: %s algo %d, "
            "workspace %zu bytes\n",
            cu->name, op, nb_dtype_name(odt), (long long)g.n, (long long)g.c, (long long)g.h,
            (long long)g.w, (long long)g.k, (long long)g.cg, (long long)g.r, (long long)g.s,
            e->direct ? "nabla direct kernel (no cuDNN algorithm)" : "cuDNN", e->algo, e->ws);
  return NB_OK;
}

/* The cache entry of a node, made on first use. */
nb_status entry_of(nb_cuda *cu, const nb_tensor *node, conv_entry **out) {
  *out = nullptr;
  conv_geom g = geom_of(node);
  int64_t key[KEY_LEN];
  key_of(node, g, key);
  bool fits_int = true; /* cuDNN's descriptors take int sizes */
  for (int i = 1; i < KEY_LEN; i++) fits_int = fits_int && key[i] <= INT_MAX;
  cudnnHandle_t h = force_direct() || any_empty(g) || !fits_int ? nullptr : dnn_handle(cu);
  if (!h) return NB_OK; /* direct kernels */
  for (conv_entry *e : cu->dnn->cache)
    if (!memcmp(e->key, key, sizeof key)) {
      *out = e;
      return NB_OK;
    }
  conv_entry *e = new (std::nothrow) conv_entry();
  if (!e) return nb_error(NB_ERR_OOM, "%s: out of host memory", cu->name);
  memcpy(e->key, key, sizeof key);
  nb_status st = nb_cuda_cache_keep(cu, cu->dnn->cache, e, setup(cu, h, node, g, e), destroy_entry);
  if (!st) *out = e;
  return st;
}

nb_status run_cudnn(nb_cuda *cu, const nb_kernel_call *c, conv_entry *e) {
  const nb_tensor *node = c->node;
  const char *op = nb_cuda_op_name(node);
  if (c->workspace_bytes < e->ws)
    return nb_error(NB_ERR_INTERNAL, "%s: %s: workspace of %zu bytes, cuDNN algorithm %d needs %zu",
                    cu->name, op, c->workspace_bytes, e->algo, e->ws);
  cudnnHandle_t h = cu->dnn->h;
  const float one = 1.0f, zero = 0.0f;
  const void *a = c->in[0], *b = c->in[1];
  /* half operands: cuDNN writes a half result after its own workspace,
   * widened into the f32 output below */
  bool half = is_half(node->in[0]->dtype);
  void *out = c->out;
  if (half) {
    size_t need = round256(e->ws) + (size_t)nb_tensor_numel(node) * 2;
    if (c->workspace_bytes < need)
      return nb_error(NB_ERR_INTERNAL, "%s: %s: workspace of %zu bytes, a half result needs %zu",
                      cu->name, op, c->workspace_bytes, need);
    out = static_cast<char *>(c->workspace) + round256(e->ws);
  }
  cudnnStatus_t s;
  if (node->op == NB_OP_CONV2D)
    s = cudnnConvolutionForward(h, &one, e->xd, a, e->wd, b, e->cd,
                                (cudnnConvolutionFwdAlgo_t)e->algo, c->workspace, e->ws, &zero,
                                e->yd, out);
  else if (node->op == NB_OP_CONV2D_BWD_INPUT) /* a = dy, b = w */
    s = cudnnConvolutionBackwardData(h, &one, e->wd, b, e->yd, a, e->cd,
                                     (cudnnConvolutionBwdDataAlgo_t)e->algo, c->workspace, e->ws,
                                     &zero, e->xd, out);
  else /* a = x, b = dy */
    s = cudnnConvolutionBackwardFilter(h, &one, e->xd, a, e->yd, b, e->cd,
                                       (cudnnConvolutionBwdFilterAlgo_t)e->algo, c->workspace,
                                       e->ws, &zero, e->wd, out);
  if (s == CUDNN_STATUS_SUCCESS && half) {
    nb_tensor low = *node; /* the result's layout (dense) in the half dtype */
    low.dtype = node->in[0]->dtype;
    return nb_cuda_strided_copy(cu, &low, out, c->out, NB_F32, op);
  }
  if (s == CUDNN_STATUS_NOT_SUPPORTED) {
    /* the chosen algorithm cannot run with FP32 math after all: from now on
     * this geometry runs on the direct kernels */
    e->direct = true;
    return run_direct(cu, c, geom_of(node));
  }
  return s == CUDNN_STATUS_SUCCESS ? NB_OK : dnn_fail(cu, s, op, "the cuDNN convolution");
}

} // namespace

void nb_cuda_dnn_free(nb_cuda *cu) {
  nb_cuda_dnn *d = cu->dnn;
  if (!d) return;
  for (conv_entry *e : d->cache) destroy_entry(e);
  if (d->h) cudnnDestroy(d->h);
  delete d;
  cu->dnn = nullptr;
}

#else /* no cuDNN in this build */

struct nb_cuda_dnn {};

void nb_cuda_dnn_free(nb_cuda *) {}

#endif

namespace {

size_t conv_workspace(nb_cuda *cu, const nb_tensor *node) {
  /* half operands on the direct kernels (also cuDNN's fallback at run
   * time): both widened to f32 */
  size_t direct = half_direct_bytes(node);
#ifdef NABLA_WITH_CUDNN
  conv_entry *e;
  /* an error here shows again, with its message, when the kernel runs */
  if (entry_of(cu, node, &e) || !e || e->direct) {
    nb_clear_error();
    return direct;
  }
  if (!is_half(node->in[0]->dtype)) return e->ws;
  /* cuDNN's workspace, then its half result */
  size_t dnn = round256(e->ws) + (size_t)nb_tensor_numel(node) * 2;
  return dnn > direct ? dnn : direct;
#else
  (void)cu;
  return direct;
#endif
}

nb_status run_conv(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  for (int i = 0; i < node->n_in; i++)
    if (!nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_INTERNAL, "%s: input %d is not contiguous", nb_cuda_op_name(node), i);
  conv_geom g = geom_of(node);
#ifdef NABLA_WITH_CUDNN
  conv_entry *e;
  nb_status st = entry_of(cu, node, &e);
  if (st) return st;
  if (e && !e->direct) return run_cudnn(cu, c, e);
#endif
  return run_direct(cu, c, g);
}

nb_status check_conv(nb_cuda *cu, const nb_tensor *node) {
  nb_dtype dt = node->in[0]->dtype;
  for (int i = 0; i < node->n_in; i++)
    if (node->in[i]->dtype != dt || !(dt == NB_F32 || is_half(dt)) ||
        !nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_UNSUPPORTED,
                      "%s: %s: input %d is not contiguous or not of one dtype f32, bf16 or f16 "
                      "(%s)",
                      cu->name, nb_cuda_op_name(node), i, nb_dtype_name(node->in[i]->dtype));
#ifdef NABLA_WITH_CUDNN
  /* descriptors and algorithm now, at compile time: a cuDNN failure stops
   * nb_compile, with cuDNN's message, instead of a training step */
  conv_entry *e;
  return entry_of(cu, node, &e);
#else
  return NB_OK;
#endif
}

} // namespace

void nb_cuda_register_conv(nb_cuda_kernel_entry *t) {
  const nb_opcode ops[] = {NB_OP_CONV2D, NB_OP_CONV2D_BWD_INPUT, NB_OP_CONV2D_BWD_WEIGHT};
  for (nb_opcode op : ops) {
    t[op].run = run_conv;
    t[op].workspace = conv_workspace;
    t[op].check = check_conv;
    /* bias + ReLU after a convolution, ReLU's gradient after its input gradient */
    t[op].epilogue = 1;
  }
}
