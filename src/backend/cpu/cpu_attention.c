/* Fused scaled-dot-product attention on the CPU (layout in ops_attention.c).
 *
 * Forward: for each query row, the scores s_j = scale * q.k_j (j < i + 1
 * when causal) go into a per-thread row buffer of Tk floats, then
 * y = sum_j exp(s_j - m) v_j / l and lse = m + log(l) with m the row max,
 * so logits of any size neither overflow nor underflow to an empty row.
 * Only that row lives in memory, never the Tq x Tk matrix.
 *
 * Backward (the flash-attention recurrence): with p_ij = exp(s_ij - lse_i)
 * recomputed from q, k and the saved lse, D_i = dy_i . y_i and g_i the
 * gradient reaching lse_i,
 *   ds_ij = p_ij (dy_i . v_j - D_i + g_i)
 *   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dy_i.
 * dk and dv sum over all queries of a (batch, head), so the work is split
 * over (batch, head) pairs and no two threads write the same row. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_internal.h"

/* Below this many multiply-adds a parallel region costs more than it saves. */
#define PAR_MIN 32768

typedef struct {
  int64_t bh, tq, tk, d, dv;
  int causal;
  float scale;
} att_dims;

static int thread_id(void) {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/* Four partial sums let the compiler keep four vector lanes busy without
 * reassociating (C forbids it), and bound the rounding error's growth. */
static inline float dot(const float *a, const float *b, int64_t n) {
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; i++) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

static inline void axpy(float *y, float a, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static int64_t row_keys(const att_dims *a, int64_t i) {
  if (!a->causal) return a->tk;
  return i + 1 < a->tk ? i + 1 : a->tk;
}

static att_dims dims_of(const nb_tensor *node) {
  const nb_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
  att_dims a = {.bh = q->shape[0] * q->shape[1],
                .tq = q->shape[2],
                .tk = k->shape[2],
                .d = q->shape[3],
                .dv = v->shape[3],
                .causal = node->ip[0] != 0,
                .scale = node->fp[0]};
  return a;
}

static size_t fwd_workspace(const nb_tensor *node) {
  att_dims a = dims_of(node);
  return (size_t)nb_cpu_max_threads() * (size_t)a.tk * sizeof(float);
}

static nb_status check_layout(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  for (int i = 0; i < node->n_in; i++)
    if (node->in[i]->dtype != NB_F32 || !nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_INTERNAL, "%s: input %d is not contiguous f32",
                      nb_op_def_get(node->op)->name, i);
  return NB_OK;
}

NB_CPU_CLONES
static void fwd_row(const att_dims *a, const float *qi, const float *k, const float *v, float *s,
                    float *out, int64_t i) {
  int64_t n = row_keys(a, i), dv = a->dv;
  float m = -INFINITY;
  for (int64_t j = 0; j < n; j++) {
    s[j] = a->scale * dot(qi, k + j * a->d, a->d);
    /* NaN wins so that a NaN input poisons its row instead of vanishing */
    if (s[j] > m || s[j] != s[j]) m = s[j];
  }
  memset(out, 0, (size_t)dv * sizeof *out);
  if (n == 0) { /* no keys: an empty sum, and log(0) */
    out[dv] = -INFINITY;
    return;
  }
  float l = 0.0f;
  for (int64_t j = 0; j < n; j++) {
    float p = expf(s[j] - m);
    l += p;
    axpy(out, p, v + j * dv, dv);
  }
  float r = 1.0f / l;
  for (int64_t e = 0; e < dv; e++) out[e] *= r;
  out[dv] = m + logf(l);
}

static nb_status run_attention(const nb_kernel_call *c) {
  nb_status st = check_layout(c);
  if (st) return st;
  att_dims a = dims_of(c->node);
  int nt = nb_cpu_threads();
  if (c->workspace_bytes < (size_t)nt * (size_t)a.tk * sizeof(float))
    return nb_error(NB_ERR_INTERNAL, "attention: workspace of %zu bytes is too small",
                    c->workspace_bytes);
  const float *q = c->in[0], *k = c->in[1], *v = c->in[2];
  float *out = c->out, *ws = c->workspace;
  int64_t rows = a.bh * a.tq;
  /* rows are independent, so the forward splits finer than (batch, head):
   * one head with a long sequence still uses every core. Dynamic chunks
   * even out causal rows, whose cost grows with their index. */
  int par = rows > 1 && rows * a.tk * (a.d + a.dv) > PAR_MIN;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt) if (par)
  for (int64_t r = 0; r < rows; r++) {
    int64_t b = r / a.tq, i = r % a.tq;
    float *s = ws + (size_t)thread_id() * (size_t)a.tk;
    fwd_row(&a, q + r * a.d, k + b * a.tk * a.d, v + b * a.tk * a.dv, s, out + r * (a.dv + 1), i);
  }
  return NB_OK;
}

/* attention_cached: Tq new queries at positions pos..pos + Tq - 1 over a
 * cache of Tk positions, query i seeing keys 0..pos + i. Each row is a
 * causal row of the plain forward at index pos + i, so both share fwd_row
 * and give the same bits for the same keys. */
static nb_status run_attention_cached(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  for (int i = 0; i < 3; i++)
    if (node->in[i]->dtype != NB_F32 || !nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_INTERNAL, "attention_cached: input %d is not contiguous f32", i);
  att_dims a = dims_of(node);
  a.causal = 1;
  int64_t pos;
  nb_status st = nb_cpu_read_pos(node, node->in[3], c->in[3], &pos);
  if (st) return st;
  if (pos < 0 || pos > a.tk - a.tq)
    return nb_error(NB_ERR_INVALID_ARG,
                    "attention_cached: queries at positions [%lld, %lld) do not fit in a cache of "
                    "%lld positions (pos must be in [0, %lld])",
                    (long long)pos, (long long)(pos + a.tq), (long long)a.tk,
                    (long long)(a.tk - a.tq));
  int nt = nb_cpu_threads();
  if (c->workspace_bytes < (size_t)nt * (size_t)a.tk * sizeof(float))
    return nb_error(NB_ERR_INTERNAL, "attention_cached: workspace of %zu bytes is too small",
                    c->workspace_bytes);
  const float *q = c->in[0], *k = c->in[1], *v = c->in[2];
  float *out = c->out, *ws = c->workspace;
  int64_t rows = a.bh * a.tq;
  /* the keys actually read, not the capacity, decide whether threads pay */
  int par = rows > 1 && rows * (pos + a.tq) * (a.d + a.dv) > PAR_MIN;
#pragma omp parallel for schedule(dynamic, 4) num_threads(nt) if (par)
  for (int64_t r = 0; r < rows; r++) {
    int64_t b = r / a.tq, i = r % a.tq;
    float *s = ws + (size_t)thread_id() * (size_t)a.tk;
    fwd_row(&a, q + r * a.d, k + b * a.tk * a.d, v + b * a.tk * a.dv, s, out + r * (a.dv + 1),
            pos + i);
  }
  return NB_OK;
}

NB_CPU_CLONES
static void bwd_head(const att_dims *a, const float *q, const float *k, const float *v,
                     const float *p, const float *dp, float *dq, float *dk, float *dv) {
  int64_t d = a->d, nv = a->dv, pw = a->dv + 1;
  memset(dk, 0, (size_t)(a->tk * d) * sizeof *dk);
  memset(dv, 0, (size_t)(a->tk * nv) * sizeof *dv);
  for (int64_t i = 0; i < a->tq; i++) {
    const float *qi = q + i * d, *dyi = dp + i * pw;
    float *dqi = dq + i * d;
    memset(dqi, 0, (size_t)d * sizeof *dqi);
    float lse = p[i * pw + nv], glse = dyi[nv];
    float di = dot(dyi, p + i * pw, nv);
    int64_t n = row_keys(a, i);
    for (int64_t j = 0; j < n; j++) {
      const float *kj = k + j * d, *vj = v + j * nv;
      float pij = expf(a->scale * dot(qi, kj, d) - lse);
      float ds = pij * (dot(dyi, vj, nv) - di + glse);
      axpy(dqi, a->scale * ds, kj, d);
      axpy(dk + j * d, a->scale * ds, qi, d);
      axpy(dv + j * nv, pij, dyi, nv);
    }
  }
}

static nb_status run_attention_bwd(const nb_kernel_call *c) {
  nb_status st = check_layout(c);
  if (st) return st;
  att_dims a = dims_of(c->node);
  const float *q = c->in[0], *k = c->in[1], *v = c->in[2], *p = c->in[3], *dp = c->in[4];
  float *dq = c->out;
  float *dk = dq + a.bh * a.tq * a.d;
  float *dv = dk + a.bh * a.tk * a.d;
  int64_t pw = a.dv + 1;
  int par = a.bh > 1 && a.bh * a.tq * a.tk * (a.d + a.dv) > PAR_MIN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nb_cpu_threads()) if (par)
  for (int64_t b = 0; b < a.bh; b++)
    bwd_head(&a, q + b * a.tq * a.d, k + b * a.tk * a.d, v + b * a.tk * a.dv, p + b * a.tq * pw,
             dp + b * a.tq * pw, dq + b * a.tq * a.d, dk + b * a.tk * a.d, dv + b * a.tk * a.dv);
  return NB_OK;
}

void nb_cpu_register_attention(nb_cpu_kernel_entry *t) {
  t[NB_OP_ATTENTION].run = run_attention;
  t[NB_OP_ATTENTION].workspace = fwd_workspace;
  t[NB_OP_ATTENTION_BWD].run = run_attention_bwd;
  t[NB_OP_ATTENTION_CACHED].run = run_attention_cached;
  t[NB_OP_ATTENTION_CACHED].workspace = fwd_workspace;
}
