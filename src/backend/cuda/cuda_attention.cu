/* Fused scaled-dot-product attention on the GPU (layout in ops_attention.c):
 * straightforward kernels, a block per query row (forward, dq) or per key
 * row (dk, dv), that never store the Tq x Tk score matrix.
 *
 * Forward: the keys go by in chunks of CHUNK; each thread scores one key of
 * the chunk, and the block keeps the running max m, the running sum l and
 * the output accumulator in shared memory, rescaling them when the max
 * grows (the online softmax of flash attention). y = acc / l, and the row's
 * logsumexp m + log(l) goes to column Dv, as on the CPU.
 *
 * Backward (the CPU's recurrence): p_ij = exp(s_ij - lse_i) recomputed,
 * D_i = dy_i . y_i (one small kernel, into the workspace),
 * ds_ij = p_ij (dy_i . v_j - D_i + g_i) with g_i the gradient reaching lse_i;
 * dq_i = scale sum_j ds_ij k_j, then dk_j = scale sum_i ds_ij q_i and
 * dv_j = sum_i p_ij dy_i. Each output row has one block, so no atomics.
 *
 * attention_cached (decoding with a KV cache) is the forward with query i
 * at position pos + i, pos read from device memory by the kernel.
 *
 * A first version: correct for every size the graph accepts, but far from
 * a tuned flash-attention kernel (no tensor cores, K and V read per row). */
#include <math.h>

#include "cuda_internal.h"

namespace {

const int CHUNK = 128; /* keys (or queries) per step = threads per block */

struct att_dims {
  int64_t bh, tq, tk, d, dv;
  int causal;
  float scale;
};

att_dims dims_of(const nb_tensor *node) {
  const nb_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
  att_dims a;
  a.bh = q->shape[0] * q->shape[1];
  a.tq = q->shape[2];
  a.tk = k->shape[2];
  a.d = q->shape[3];
  a.dv = v->shape[3];
  a.causal = node->ip[0] != 0;
  a.scale = node->fp[0];
  return a;
}

__device__ inline int64_t row_keys(const att_dims &a, int64_t i) {
  if (!a.causal) return a.tk;
  return i + 1 < a.tk ? i + 1 : a.tk;
}

__device__ inline float dot(const float *x, const float *y, int64_t n) {
  float s = 0.0f;
  for (int64_t e = 0; e < n; e++) s += x[e] * y[e];
  return s;
}

size_t fwd_smem(const att_dims &a) { return (size_t)(a.d + CHUNK + a.dv) * sizeof(float); }
size_t dq_smem(const att_dims &a) { return (size_t)(2 * a.d + a.dv + CHUNK) * sizeof(float); }
size_t dkv_smem(const att_dims &a) {
  return (size_t)(2 * a.d + 2 * a.dv + 2 * CHUNK) * sizeof(float);
}

/* pos != NULL: attention_cached, query i at position pos + i (one i32/i64
 * element read here, on the device) over the cached keys 0..pos + i. */
__global__ void att_fwd(const float *q, const float *k, const float *v, att_dims a, float *out,
                        const void *pos, int pos_i64, nb_cuda_fault *fault, int op) {
  extern __shared__ float sm[];
  float *qs = sm, *ps = qs + a.d, *acc = ps + CHUNK;
  int t = threadIdx.x;
  int64_t shift = 0;
  bool bad = false;
  if (pos) {
    shift = pos_i64 ? *(const int64_t *)pos : *(const int32_t *)pos;
    bad = shift < 0 || shift > a.tk - a.tq;
    if (bad && blockIdx.x == 0 && t == 0)
      nb_cuda_report_fault(fault, op, shift, 0, a.tk - a.tq + 1, 2);
  }
  for (int64_t row = blockIdx.x; row < a.bh * a.tq; row += gridDim.x) {
    int64_t b = row / a.tq, i = row % a.tq + shift;
    const float *kb = k + b * a.tk * a.d, *vb = v + b * a.tk * a.dv;
    float *o = out + row * (a.dv + 1);
    for (int64_t e = t; e < a.d; e += blockDim.x) qs[e] = q[row * a.d + e];
    for (int64_t e = t; e < a.dv; e += blockDim.x) acc[e] = 0.0f;
    __syncthreads();
    int64_t n = bad ? 0 : row_keys(a, i); /* a bad position: zeros, and the fault */
    float m = -INFINITY, l = 0.0f;
    for (int64_t j0 = 0; j0 < n; j0 += CHUNK) {
      int64_t j = j0 + t;
      bool valid = j < n;
      float s = valid ? a.scale * dot(qs, kb + j * a.d, a.d) : -INFINITY;
      float mn = nb_max_nan(m, nb_block_reduce(s, 1));
      float corr = expf(m - mn);
      float p = valid ? expf(s - mn) : 0.0f;
      ps[t] = p;
      l = l * corr + nb_block_reduce(p, 0); /* its barriers publish ps[] */
      int64_t w = n - j0 < CHUNK ? n - j0 : CHUNK;
      for (int64_t e = t; e < a.dv; e += blockDim.x) {
        float x = acc[e] * corr;
        for (int64_t jj = 0; jj < w; jj++) x += ps[jj] * vb[(j0 + jj) * a.dv + e];
        acc[e] = x;
      }
      m = mn;
      __syncthreads(); /* ps[] is rewritten by the next chunk */
    }
    if (n == 0) { /* no keys: an empty sum, and log(0) */
      for (int64_t e = t; e < a.dv; e += blockDim.x) o[e] = 0.0f;
      if (t == 0) o[a.dv] = -INFINITY;
    } else {
      float r = 1.0f / l;
      for (int64_t e = t; e < a.dv; e += blockDim.x) o[e] = acc[e] * r;
      if (t == 0) o[a.dv] = m + logf(l);
    }
    __syncthreads();
  }
}

/* D_i = dy_i . y_i for every row, a warp per row. */
__global__ void att_rowdot(const float *p, const float *dp, att_dims a, float *dvec) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  int64_t pw = a.dv + 1;
  for (int64_t row = warp; row < a.bh * a.tq; row += nwarps) {
    float s = 0.0f;
    for (int64_t e = lane; e < a.dv; e += 32) s += dp[row * pw + e] * p[row * pw + e];
    s = nb_warp_sum(s);
    if (lane == 0) dvec[row] = s;
  }
}

__global__ void att_dq(const float *q, const float *k, const float *v, const float *p,
                       const float *dp, const float *dvec, att_dims a, float *dq) {
  extern __shared__ float sm[];
  float *qs = sm, *dys = qs + a.d, *dsm = dys + a.dv, *accq = dsm + CHUNK;
  int t = threadIdx.x;
  int64_t pw = a.dv + 1;
  for (int64_t row = blockIdx.x; row < a.bh * a.tq; row += gridDim.x) {
    int64_t b = row / a.tq, i = row % a.tq;
    const float *kb = k + b * a.tk * a.d, *vb = v + b * a.tk * a.dv;
    for (int64_t e = t; e < a.d; e += blockDim.x) {
      qs[e] = q[row * a.d + e];
      accq[e] = 0.0f;
    }
    for (int64_t e = t; e < a.dv; e += blockDim.x) dys[e] = dp[row * pw + e];
    __syncthreads();
    float lse = p[row * pw + a.dv], g = dp[row * pw + a.dv], di = dvec[row];
    int64_t n = row_keys(a, i);
    for (int64_t j0 = 0; j0 < n; j0 += CHUNK) {
      int64_t j = j0 + t;
      float ds = 0.0f;
      if (j < n) {
        float pij = expf(a.scale * dot(qs, kb + j * a.d, a.d) - lse);
        ds = pij * (dot(dys, vb + j * a.dv, a.dv) - di + g);
      }
      dsm[t] = ds;
      __syncthreads();
      int64_t w = n - j0 < CHUNK ? n - j0 : CHUNK;
      for (int64_t e = t; e < a.d; e += blockDim.x) {
        float x = accq[e];
        for (int64_t jj = 0; jj < w; jj++) x += a.scale * dsm[jj] * kb[(j0 + jj) * a.d + e];
        accq[e] = x;
      }
      __syncthreads();
    }
    for (int64_t e = t; e < a.d; e += blockDim.x) dq[row * a.d + e] = accq[e];
    __syncthreads();
  }
}

__global__ void att_dkv(const float *q, const float *k, const float *v, const float *p,
                        const float *dp, const float *dvec, att_dims a, float *dk, float *dv) {
  extern __shared__ float sm[];
  float *ks = sm, *vs = ks + a.d, *pm = vs + a.dv, *dsm = pm + CHUNK, *acck = dsm + CHUNK;
  float *accv = acck + a.d;
  int t = threadIdx.x;
  int64_t pw = a.dv + 1;
  for (int64_t row = blockIdx.x; row < a.bh * a.tk; row += gridDim.x) {
    int64_t b = row / a.tk, j = row % a.tk;
    const float *qb = q + b * a.tq * a.d, *pb = p + b * a.tq * pw, *dpb = dp + b * a.tq * pw;
    const float *db = dvec + b * a.tq;
    for (int64_t e = t; e < a.d; e += blockDim.x) {
      ks[e] = k[row * a.d + e];
      acck[e] = 0.0f;
    }
    for (int64_t e = t; e < a.dv; e += blockDim.x) {
      vs[e] = v[row * a.dv + e];
      accv[e] = 0.0f;
    }
    __syncthreads();
    /* queries that see key j: all of them, or i >= j when causal */
    int64_t first = a.causal ? j : 0;
    for (int64_t i0 = first; i0 < a.tq; i0 += CHUNK) {
      int64_t i = i0 + t;
      float pij = 0.0f, ds = 0.0f;
      if (i < a.tq) {
        const float *dyi = dpb + i * pw;
        pij = expf(a.scale * dot(qb + i * a.d, ks, a.d) - pb[i * pw + a.dv]);
        ds = pij * (dot(dyi, vs, a.dv) - db[i] + dyi[a.dv]);
      }
      pm[t] = pij;
      dsm[t] = ds;
      __syncthreads();
      int64_t w = a.tq - i0 < CHUNK ? a.tq - i0 : CHUNK;
      for (int64_t e = t; e < a.d; e += blockDim.x) {
        float x = acck[e];
        for (int64_t ii = 0; ii < w; ii++) x += a.scale * dsm[ii] * qb[(i0 + ii) * a.d + e];
        acck[e] = x;
      }
      for (int64_t e = t; e < a.dv; e += blockDim.x) {
        float x = accv[e];
        for (int64_t ii = 0; ii < w; ii++) x += pm[ii] * dpb[(i0 + ii) * pw + e];
        accv[e] = x;
      }
      __syncthreads();
    }
    for (int64_t e = t; e < a.d; e += blockDim.x) dk[row * a.d + e] = acck[e];
    for (int64_t e = t; e < a.dv; e += blockDim.x) dv[row * a.dv + e] = accv[e];
    __syncthreads();
  }
}

unsigned row_blocks(const nb_cuda *cu, int64_t rows) {
  int64_t cap = (int64_t)(cu->sm_count > 0 ? cu->sm_count : 32) * 16;
  return (unsigned)(rows < cap ? (rows > 0 ? rows : 1) : cap);
}

nb_status run_attention(nb_cuda *cu, const nb_kernel_call *c) {
  att_dims a = dims_of(c->node);
  const float *q = static_cast<const float *>(c->in[0]), *k = static_cast<const float *>(c->in[1]),
              *v = static_cast<const float *>(c->in[2]);
  int64_t rows = a.bh * a.tq;
  if (rows == 0) return NB_OK;
  const void *pos = nullptr;
  int pos_i64 = 0;
  if (c->node->op == NB_OP_ATTENTION_CACHED) {
    a.causal = 1; /* each row is the causal row pos + i */
    pos = c->in[3];
    pos_i64 = c->node->in[3]->dtype == NB_I64;
  }
  att_fwd<<<row_blocks(cu, rows), CHUNK, fwd_smem(a), cu->stream>>>(
      q, k, v, a, static_cast<float *>(c->out), pos, pos_i64, cu->fault_dev, (int)c->node->op);
  return nb_cuda_launched(cu, nb_cuda_op_name(c->node));
}

size_t bwd_workspace(nb_cuda *, const nb_tensor *node) {
  att_dims a = dims_of(node);
  return (size_t)(a.bh * a.tq) * sizeof(float);
}

nb_status run_attention_bwd(nb_cuda *cu, const nb_kernel_call *c) {
  att_dims a = dims_of(c->node);
  const float *q = static_cast<const float *>(c->in[0]), *k = static_cast<const float *>(c->in[1]),
              *v = static_cast<const float *>(c->in[2]), *p = static_cast<const float *>(c->in[3]),
              *dp = static_cast<const float *>(c->in[4]);
  float *dq = static_cast<float *>(c->out);
  float *dk = dq + a.bh * a.tq * a.d;
  float *dv = dk + a.bh * a.tk * a.d;
  if (c->workspace_bytes < bwd_workspace(cu, c->node))
    return nb_error(NB_ERR_INTERNAL, "attention_backward: workspace of %zu bytes is too small",
                    c->workspace_bytes);
  float *dvec = static_cast<float *>(c->workspace);
  int64_t rows = a.bh * a.tq;
  if (rows > 0) {
    att_rowdot<<<nb_cuda_blocks(cu, rows * 32, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(
        p, dp, a, dvec);
    att_dq<<<row_blocks(cu, rows), CHUNK, dq_smem(a), cu->stream>>>(q, k, v, p, dp, dvec, a, dq);
  }
  if (a.bh * a.tk > 0)
    att_dkv<<<row_blocks(cu, a.bh * a.tk), CHUNK, dkv_smem(a), cu->stream>>>(q, k, v, p, dp, dvec,
                                                                             a, dk, dv);
  return nb_cuda_launched(cu, "attention_backward");
}

/* Rows live in shared memory: refuse head sizes that do not fit the
 * default 48 KB (about 5000 floats of D + Dv) rather than fail at launch. */
nb_status check_attention(nb_cuda *cu, const nb_tensor *node) {
  int n_f32 = node->op == NB_OP_ATTENTION_CACHED ? 3 : node->n_in; /* then pos */
  for (int i = 0; i < n_f32; i++)
    if (node->in[i]->dtype != NB_F32 || !nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_UNSUPPORTED, "%s: %s: input %d is not contiguous f32", cu->name,
                      nb_cuda_op_name(node), i);
  att_dims a = dims_of(node);
  size_t need = node->op == NB_OP_ATTENTION_BWD ? dkv_smem(a) : fwd_smem(a);
  if (need > 48 * 1024)
    return nb_error(NB_ERR_UNSUPPORTED,
                    "%s: %s: head sizes D = %lld, Dv = %lld need %zu bytes of shared memory (the "
                    "CUDA kernel takes at most 48 KB)",
                    cu->name, nb_cuda_op_name(node), (long long)a.d, (long long)a.dv, need);
  return NB_OK;
}

} // namespace

void nb_cuda_register_attention(nb_cuda_kernel_entry *t) {
  t[NB_OP_ATTENTION].run = run_attention;
  t[NB_OP_ATTENTION].check = check_attention;
  t[NB_OP_ATTENTION_BWD].run = run_attention_bwd;
  t[NB_OP_ATTENTION_BWD].check = check_attention;
  t[NB_OP_ATTENTION_BWD].workspace = bwd_workspace;
  t[NB_OP_ATTENTION_CACHED].run = run_attention;
  t[NB_OP_ATTENTION_CACHED].check = check_attention;
}
