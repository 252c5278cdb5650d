/* Fused scaled-dot-product attention on the CPU (layout in ops_attention.c).
 *
 * Forward: for query row i, the scores s_j = scale * q_i . k_j (j < i + 1
 * when causal), then y_i = sum_j exp(s_j - m) v_j / l and
 * lse_i = m + log(l) with m the row max, so logits of any size neither
 * overflow nor underflow to an empty row. The Tq x Tk matrix never exists:
 * only a block of BQ rows of scores at a time.
 *
 * Backward (the flash-attention recurrence): with p_ij = exp(s_ij - lse_i)
 * recomputed from q, k and the saved lse, D_i = dy_i . y_i and g_i the
 * gradient reaching lse_i,
 *   ds_ij = p_ij (dy_i . v_j - D_i + g_i)
 *   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dy_i.
 * dk and dv sum over all queries of a (batch, head), so the work is split
 * over (batch, head) pairs and no two threads write the same row.
 *
 * Both directions run a (batch, head) as small matrix products over blocks
 * of BQ query rows. K (and V for dy . v_j) is first transposed into a
 * per-thread buffer, so that a block of scores is a sum of axpys along the
 * keys: those vectorise, where a dot product per (i, j) pair spends its time
 * on horizontal sums. Every score adds its d products in order c = 0, 1, ...
 * and every output row sums its keys in order, so a row has the same bits
 * whichever block or thread computes it; attention_cached relies on that to
 * match the plain forward exactly. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_internal.h"
#include "cpu_vmath.h"

/* Below this many multiply-adds a parallel region costs more than it saves. */
#define PAR_MIN 32768
/* Query rows per block: a block of scores (BQ x Tk) and the transposed keys
 * (D x Tk) stay in L1/L2 for the sizes a CPU trains. */
#define BQ 32

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

static int team_size(void) {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
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

/* Keys seen by the query at position i. */
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

/* Per thread: the transposed keys and a block of scores. */
static size_t fwd_floats(const att_dims *a) { return (size_t)(a->d + BQ) * (size_t)a->tk; }

static size_t fwd_workspace(const nb_tensor *node) {
  att_dims a = dims_of(node);
  return (size_t)nb_cpu_max_threads() * fwd_floats(&a) * sizeof(float);
}

/* Per thread: transposed keys and values, and two blocks (p and ds). */
static size_t bwd_floats(const att_dims *a) {
  return (size_t)(a->d + a->dv + 2 * BQ) * (size_t)a->tk;
}

static size_t bwd_workspace(const nb_tensor *node) {
  att_dims a = dims_of(node);
  return (size_t)nb_cpu_max_threads() * bwd_floats(&a) * sizeof(float);
}

static nb_status check_layout(const nb_kernel_call *c, int n_in) {
  const nb_tensor *node = c->node;
  for (int i = 0; i < n_in; i++)
    if (node->in[i]->dtype != NB_F32 || !nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_INTERNAL, "%s: input %d is not contiguous f32",
                      nb_op_def_get(node->op)->name, i);
  return NB_OK;
}

static nb_status check_workspace(const nb_kernel_call *c, size_t per_thread) {
  size_t want = (size_t)nb_cpu_threads() * per_thread * sizeof(float);
  if (c->workspace_bytes < want)
    return nb_error(NB_ERR_INTERNAL, "%s: workspace of %zu bytes is too small (%zu needed)",
                    nb_op_def_get(c->node->op)->name, c->workspace_bytes, want);
  return NB_OK;
}

/* t[c * ldt + j] = x[j * ldx + c] for keys j in [j0, j1), c < d. */
static void transpose(const float *x, int64_t ldx, int64_t j0, int64_t j1, int64_t d, float *t,
                      int64_t ldt) {
  for (int64_t j = j0; j < j1; j++)
    for (int64_t c = 0; c < d; c++) t[c * ldt + j] = x[j * ldx + c];
}

/* Eight floats as one GCC vector (an AVX register in the avx2 clones, two
 * SSE registers in the baseline ones): the micro-kernels below keep their
 * accumulators in registers, which plain loops over arrays do not get.
 * Loads and stores go through memcpy (no alignment assumed), and macros
 * rather than functions, as a vector argument or result would change the
 * baseline clone's ABI (-Wpsabi). The tiles index small arrays of vectors
 * in loops of 1 to 4 rounds: "GCC unroll" makes GCC unroll them before it
 * places the arrays, which otherwise stay on the stack. */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
#define V8_LOAD(v, p)  memcpy(&(v), (p), sizeof(v8f))
#define V8_STORE(p, v) memcpy((p), &(v), sizeof(v8f))

/* s[r * lds + j] = scale * sum_c x[r * ldx + c] t[c * ldt + j] for r < R,
 * j in [j0, j0 + 8 W): R rows times W vectors of keys, in registers. Every
 * element sums its d products in order c = 0, 1, ..., like the scalar tail
 * in scores(). */
static inline __attribute__((always_inline)) void score_tile(const float *x, int64_t ldx, int R,
                                                             const float *t, int64_t ldt,
                                                             int64_t j0, int W, int64_t d,
                                                             float scale, float *s, int64_t lds) {
  v8f acc[4][2];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int w = 0; w < W; w++) acc[r][w] = (v8f){0};
  for (int64_t c = 0; c < d; c++) {
    v8f tc[2];
#pragma GCC unroll 4
    for (int w = 0; w < W; w++) V8_LOAD(tc[w], t + c * ldt + j0 + 8 * w);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      float xr = x[r * ldx + c];
#pragma GCC unroll 4
      for (int w = 0; w < W; w++) acc[r][w] += xr * tc[w];
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int w = 0; w < W; w++) {
      v8f y = acc[r][w] * scale;
      V8_STORE(s + r * lds + j0 + 8 * w, y);
    }
}

/* R rows of scores for keys j < n: 16 keys a tile, then 8, then one by one. */
static inline __attribute__((always_inline)) void score_rows(const float *x, int64_t ldx, int R,
                                                             const float *t, int64_t ldt, int64_t n,
                                                             int64_t d, float scale, float *s,
                                                             int64_t lds) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) score_tile(x, ldx, R, t, ldt, j, 2, d, scale, s, lds);
  for (; j + 8 <= n; j += 8) score_tile(x, ldx, R, t, ldt, j, 1, d, scale, s, lds);
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
    for (int64_t jj = j; jj < n; jj++) {
      float acc = 0.0f;
      for (int64_t c = 0; c < d; c++) acc += x[r * ldx + c] * t[c * ldt + jj];
      s[r * lds + jj] = acc * scale;
    }
}

/* Keys row r of a block sees: all n, or with a causal mask lim0 + r (lim0 =
 * the keys of the block's first row). */
static inline int64_t block_keys(int64_t n, int64_t lim0, int64_t r) {
  return lim0 + r < n ? lim0 + r : n;
}

/* s[r * lds + j] = scale * sum_c x[r * ldx + c] t[c * ldt + j] for r < rows,
 * j < block_keys(n, lim0, r) (and up to the next tile edge): a block of
 * scores (or of dy . v_j), four rows at a time, skipping the tiles a causal
 * mask hides from all four. */
NB_CPU_CLONES
static void scores(const float *x, int64_t ldx, int64_t rows, const float *t, int64_t ldt,
                   int64_t n, int64_t lim0, int64_t d, float scale, float *s, int64_t lds) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4)
    score_rows(x + r * ldx, ldx, 4, t, ldt, block_keys(n, lim0, r + 3), d, scale, s + r * lds, lds);
  for (; r < rows; r++)
    score_rows(x + r * ldx, ldx, 1, t, ldt, block_keys(n, lim0, r), d, scale, s + r * lds, lds);
}

/* The largest of s[0, n), NaN if any is NaN (so that a NaN input poisons its
 * row instead of vanishing), -inf if n is 0: eight running maxima and NaN
 * flags, as vectors (GCC's vectoriser does not turn this loop into one). */
NB_CPU_CLONES
static float row_max(const float *s, int64_t n) {
  v8f m = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
  v8i bad = {0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    v8f x;
    V8_LOAD(x, s + j);
    v8i gt = x > m;
    m = (v8f)(((v8i)x & gt) | ((v8i)m & ~gt));
    bad |= x != x;
  }
  float r = -INFINITY;
  int nan = 0;
  for (int u = 0; u < 8; u++) {
    r = m[u] > r ? m[u] : r;
    nan |= bad[u];
  }
  for (; j < n; j++) {
    r = s[j] > r ? s[j] : r;
    nan |= s[j] != s[j];
  }
  return nan ? NAN : r;
}

/* s[j] = exp(s[j] - m) for j < n; returns their sum (eight partial sums in
 * a fixed order). */
NB_CPU_CLONES
static float exp_row(float *s, int64_t n, float m) {
  for (int64_t j = 0; j < n; j++) s[j] = nb_vexpf(s[j] - m);
  v8f l = {0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    v8f x;
    V8_LOAD(x, s + j);
    l += x;
  }
  float r = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; j < n; j++) r += s[j];
  return r;
}

/* out[e] = sum_{j < n} w[j] x[j * ldx + e] for 8 V columns, in registers. */
static inline __attribute__((always_inline)) void
wsum_tile(const float *w, int64_t n, const float *x, int64_t ldx, int V, float *out) {
  v8f acc[4];
#pragma GCC unroll 4
  for (int v = 0; v < V; v++) acc[v] = (v8f){0};
  for (int64_t j = 0; j < n; j++) {
    float wj = w[j];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
      v8f xv;
      V8_LOAD(xv, x + j * ldx + 8 * v);
      acc[v] += wj * xv;
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; v++) V8_STORE(out + 8 * v, acc[v]);
}

/* The same for two rows at once, w0 over n0 keys and w1 over n1, sharing
 * the loads of x over the keys both see. Each element still sums in order
 * of j, so a row gets the same bits as alone. */
static inline __attribute__((always_inline)) void wsum_tile2(const float *w0, int64_t n0,
                                                             const float *w1, int64_t n1,
                                                             const float *x, int64_t ldx, int V,
                                                             float *out0, float *out1) {
  v8f acc0[4], acc1[4];
  int64_t both = n0 < n1 ? n0 : n1, j;
#pragma GCC unroll 4
  for (int v = 0; v < V; v++) acc0[v] = acc1[v] = (v8f){0};
  for (j = 0; j < both; j++) {
    float a0 = w0[j], a1 = w1[j];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
      v8f xv;
      V8_LOAD(xv, x + j * ldx + 8 * v);
      acc0[v] += a0 * xv;
      acc1[v] += a1 * xv;
    }
  }
  for (j = both; j < n0; j++) {
    float a0 = w0[j];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
      v8f xv;
      V8_LOAD(xv, x + j * ldx + 8 * v);
      acc0[v] += a0 * xv;
    }
  }
  for (j = both; j < n1; j++) {
    float a1 = w1[j];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
      v8f xv;
      V8_LOAD(xv, x + j * ldx + 8 * v);
      acc1[v] += a1 * xv;
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; v++) {
    V8_STORE(out0 + 8 * v, acc0[v]);
    V8_STORE(out1 + 8 * v, acc1[v]);
  }
}

/* out[e] = sum_{j < n} w[j] x[j * ldx + e] for e < m, in order of j. */
static inline __attribute__((always_inline)) void
wsum_row(const float *w, int64_t n, const float *x, int64_t ldx, int64_t m, float *out) {
  int64_t e = 0;
  for (; e + 32 <= m; e += 32) wsum_tile(w, n, x + e, ldx, 4, out + e);
  for (; e + 8 <= m; e += 8) wsum_tile(w, n, x + e, ldx, 1, out + e);
  for (; e < m; e++) {
    float acc = 0.0f;
    for (int64_t j = 0; j < n; j++) acc += w[j] * x[j * ldx + e];
    out[e] = acc;
  }
}

/* out[r * ldo + e] = sum_j w[r * ldw + j] x[j * ldx + e] over the keys row r
 * sees (block_keys), for r < rows, e < m: a block of P V (or of dS K), two
 * rows at a time. */
NB_CPU_CLONES
static void weighted_block(const float *w, int64_t ldw, int64_t rows, int64_t n, int64_t lim0,
                           const float *x, int64_t ldx, int64_t m, float *out, int64_t ldo) {
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    const float *w0 = w + r * ldw, *w1 = w0 + ldw;
    int64_t n0 = block_keys(n, lim0, r), n1 = block_keys(n, lim0, r + 1), e = 0;
    float *o0 = out + r * ldo, *o1 = o0 + ldo;
    for (; e + 32 <= m; e += 32) wsum_tile2(w0, n0, w1, n1, x + e, ldx, 4, o0 + e, o1 + e);
    for (; e + 8 <= m; e += 8) wsum_tile2(w0, n0, w1, n1, x + e, ldx, 1, o0 + e, o1 + e);
    for (; e < m; e++) {
      float acc0 = 0.0f, acc1 = 0.0f;
      for (int64_t j = 0; j < n0; j++) acc0 += w0[j] * x[j * ldx + e];
      for (int64_t j = 0; j < n1; j++) acc1 += w1[j] * x[j * ldx + e];
      o0[e] = acc0;
      o1[e] = acc1;
    }
  }
  for (; r < rows; r++) wsum_row(w + r * ldw, block_keys(n, lim0, r), x, ldx, m, out + r * ldo);
}

/* out[k * m + e] += sum_{r in [r0, rows)} w[r * ldw + k] x[r * ldx + e] for
 * K keys k and 8 V columns from e0, in registers. */
static inline __attribute__((always_inline)) void keys_tile(const float *w, int64_t ldw, int64_t r0,
                                                            int64_t rows, int K, const float *x,
                                                            int64_t ldx, int64_t e0, int V,
                                                            float *out, int64_t m) {
  v8f acc[2][4];
#pragma GCC unroll 4
  for (int k = 0; k < K; k++)
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) V8_LOAD(acc[k][v], out + k * m + e0 + 8 * v);
  for (int64_t r = r0; r < rows; r++) {
    v8f xv[4];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) V8_LOAD(xv[v], x + r * ldx + e0 + 8 * v);
#pragma GCC unroll 4
    for (int k = 0; k < K; k++) {
      float wk = w[r * ldw + k];
#pragma GCC unroll 4
      for (int v = 0; v < V; v++) acc[k][v] += wk * xv[v];
    }
  }
#pragma GCC unroll 4
  for (int k = 0; k < K; k++)
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) V8_STORE(out + k * m + e0 + 8 * v, acc[k][v]);
}

static inline __attribute__((always_inline)) void keys_cols(const float *w, int64_t ldw, int64_t r0,
                                                            int64_t rows, int K, const float *x,
                                                            int64_t ldx, int64_t m, float *out) {
  int64_t e = 0;
  for (; e + 32 <= m; e += 32) keys_tile(w, ldw, r0, rows, K, x, ldx, e, 4, out, m);
  for (; e + 8 <= m; e += 8) keys_tile(w, ldw, r0, rows, K, x, ldx, e, 1, out, m);
  for (; e < m; e++)
#pragma GCC unroll 4
    for (int k = 0; k < K; k++) {
      float acc = out[k * m + e];
      for (int64_t r = r0; r < rows; r++) acc += w[r * ldw + k] * x[r * ldx + e];
      out[k * m + e] = acc;
    }
}

/* The first row of the block starting at query i0 that sees key j. */
static int64_t first_row(const att_dims *a, int64_t i0, int64_t j) {
  return a->causal && j > i0 ? j - i0 : 0;
}

/* out[j * m + e] += sum_r w[r * ldw + j] x[r * ldx + e] over the block's
 * rows r that see key j, for keys j < n: the block's share of dK = dS^T Q
 * and dV = P^T dY. Keys go in pairs; the second key of a pair also takes
 * the one row that sees only the first, whose w entry is 0. */
NB_CPU_CLONES
static void accumulate_keys(const att_dims *a, int64_t i0, const float *w, int64_t ldw,
                            int64_t rows, int64_t n, const float *x, int64_t ldx, int64_t m,
                            float *out) {
  int64_t j = 0;
  for (; j + 2 <= n; j += 2)
    keys_cols(w + j, ldw, first_row(a, i0, j), rows, 2, x, ldx, m, out + j * m);
  for (; j < n; j++) keys_cols(w + j, ldw, first_row(a, i0, j), rows, 1, x, ldx, m, out + j * m);
}

/* Queries [i0, i1) of one (batch, head), query i at position pos + i; kt
 * holds the first row_keys(pos + i1 - 1) keys transposed. Each row: its
 * scores, their max m and l = sum exp(s - m) (s overwritten by the
 * exponentials), y = sum_j exp(s_j - m) v_j / l and lse = m + log(l). */
static void fwd_block(const att_dims *a, const float *q, const float *kt, const float *v, float *s,
                      float *out, int64_t i0, int64_t i1, int64_t pos) {
  int64_t n = row_keys(a, pos + i1 - 1), rows = i1 - i0, pw = a->dv + 1;
  int64_t lim0 = a->causal ? row_keys(a, pos + i0) : n;
  float m[BQ], l[BQ];
  scores(q + i0 * a->d, a->d, rows, kt, a->tk, n, lim0, a->d, a->scale, s, a->tk);
  for (int64_t r = 0; r < rows; r++) {
    int64_t nr = block_keys(n, lim0, r);
    m[r] = row_max(s + r * a->tk, nr);
    l[r] = nr ? exp_row(s + r * a->tk, nr, m[r]) : 0.0f;
  }
  weighted_block(s, a->tk, rows, n, lim0, v, a->dv, a->dv, out + i0 * pw, pw);
  for (int64_t r = 0; r < rows; r++) {
    float *o = out + (i0 + r) * pw;
    if (block_keys(n, lim0, r) == 0) { /* no keys: an empty sum, and log(0) */
      memset(o, 0, (size_t)a->dv * sizeof *o);
      o[a->dv] = -INFINITY;
      continue;
    }
    float inv = 1.0f / l[r];
    for (int64_t e = 0; e < a->dv; e++) o[e] *= inv;
    o[a->dv] = m[r] + logf(l[r]);
  }
}

/* The forward of every (batch, head), queries at positions pos + i. Tasks
 * are (head, block) pairs in order, split into one contiguous range per
 * thread: heads cost the same, and a thread going on to the next block of
 * the same head transposes only the keys it adds. */
static void forward(const att_dims *a, const float *q, const float *k, const float *v, float *out,
                    float *ws, int64_t pos) {
  int64_t nblk = (a->tq + BQ - 1) / BQ, tasks = a->bh * nblk;
  int64_t keys = row_keys(a, pos + a->tq - 1);
  int par = tasks > 1 && a->bh * a->tq * keys * (a->d + a->dv) > PAR_MIN;
  size_t per = fwd_floats(a);
#pragma omp parallel num_threads(nb_cpu_threads()) if (par)
  {
    int64_t id = thread_id(), nt = team_size();
    float *kt = ws + (size_t)id * per, *s = kt + a->d * a->tk;
    int64_t have = -1, have_n = 0;
    for (int64_t t = tasks * id / nt; t < tasks * (id + 1) / nt; t++) {
      int64_t b = t / nblk, i0 = t % nblk * BQ;
      int64_t i1 = i0 + BQ < a->tq ? i0 + BQ : a->tq, n = row_keys(a, pos + i1 - 1);
      const float *kb = k + b * a->tk * a->d;
      if (b != have) have_n = 0;
      if (n > have_n) transpose(kb, a->d, have_n, n, a->d, kt, a->tk);
      have = b;
      have_n = n > have_n ? n : have_n;
      fwd_block(a, q + b * a->tq * a->d, kt, v + b * a->tk * a->dv, s,
                out + b * a->tq * (a->dv + 1), i0, i1, pos);
    }
  }
}

static nb_status run_attention(const nb_kernel_call *c) {
  nb_status st = check_layout(c, 3);
  if (st) return st;
  att_dims a = dims_of(c->node);
  st = check_workspace(c, fwd_floats(&a));
  if (st) return st;
  forward(&a, c->in[0], c->in[1], c->in[2], c->out, c->workspace, 0);
  return NB_OK;
}

/* attention_cached: Tq new queries at positions pos..pos + Tq - 1 over a
 * cache of Tk positions, query i seeing keys 0..pos + i. Each row is a
 * causal row of the plain forward at index pos + i, computed by the same
 * code, so both give the same bits for the same keys. */
static nb_status run_attention_cached(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  nb_status st = check_layout(c, 3);
  if (st) return st;
  att_dims a = dims_of(node);
  a.causal = 1;
  int64_t pos;
  st = nb_cpu_read_pos(node, node->in[3], c->in[3], &pos);
  if (st) return st;
  if (pos < 0 || pos > a.tk - a.tq)
    return nb_error(NB_ERR_INVALID_ARG,
                    "attention_cached: queries at positions [%lld, %lld) do not fit in a cache of "
                    "%lld positions (pos must be in [0, %lld])",
                    (long long)pos, (long long)(pos + a.tq), (long long)a.tk,
                    (long long)(a.tk - a.tq));
  st = check_workspace(c, fwd_floats(&a));
  if (st) return st;
  forward(&a, c->in[0], c->in[1], c->in[2], c->out, c->workspace, pos);
  return NB_OK;
}

/* One (batch, head) of the backward; p and dp are the forward's result
 * [Tq, Dv + 1] and its gradient, ws this thread's bwd_floats. */
NB_CPU_CLONES
static void bwd_head(const att_dims *a, const float *q, const float *k, const float *v,
                     const float *p, const float *dp, float *dq, float *dk, float *dv, float *ws) {
  int64_t d = a->d, nv = a->dv, pw = a->dv + 1, tk = a->tk;
  int64_t keys = a->tq ? row_keys(a, a->tq - 1) : 0;
  float *kt = ws, *vt = kt + d * tk, *pb = vt + nv * tk, *sb = pb + BQ * tk;
  transpose(k, d, 0, keys, d, kt, tk);
  transpose(v, nv, 0, keys, nv, vt, tk);
  memset(dk, 0, (size_t)(tk * d) * sizeof *dk);
  memset(dv, 0, (size_t)(tk * nv) * sizeof *dv);
  for (int64_t i0 = 0; i0 < a->tq; i0 += BQ) {
    int64_t i1 = i0 + BQ < a->tq ? i0 + BQ : a->tq, rows = i1 - i0;
    int64_t n = row_keys(a, i1 - 1);
    int64_t lim0 = a->causal ? row_keys(a, i0) : n;
    scores(q + i0 * d, d, rows, kt, tk, n, lim0, d, a->scale, pb, tk);
    scores(dp + i0 * pw, pw, rows, vt, tk, n, lim0, nv, 1.0f, sb, tk);
    for (int64_t r = 0; r < rows; r++) {
      int64_t i = i0 + r, ni = block_keys(n, lim0, r);
      const float *dyi = dp + i * pw;
      float lse = p[i * pw + nv], g = dyi[nv] - dot(dyi, p + i * pw, nv);
      float *pr = pb + r * tk, *sr = sb + r * tk;
      for (int64_t j = 0; j < ni; j++) {
        float pij = nb_vexpf(pr[j] - lse);
        pr[j] = pij;
        sr[j] = pij * (sr[j] + g);
      }
      /* keys this row does not see weigh 0 in the sums over rows below */
      for (int64_t j = ni; j < n; j++) pr[j] = sr[j] = 0.0f;
    }
    weighted_block(sb, tk, rows, n, lim0, k, d, d, dq + i0 * d, d);
    for (int64_t e = 0; e < rows * d; e++) dq[i0 * d + e] *= a->scale;
    accumulate_keys(a, i0, sb, tk, rows, n, q + i0 * d, d, d, dk);
    accumulate_keys(a, i0, pb, tk, rows, n, dp + i0 * pw, pw, nv, dv);
  }
  for (int64_t e = 0; e < keys * d; e++) dk[e] *= a->scale;
}

static nb_status run_attention_bwd(const nb_kernel_call *c) {
  nb_status st = check_layout(c, 5);
  if (st) return st;
  att_dims a = dims_of(c->node);
  st = check_workspace(c, bwd_floats(&a));
  if (st) return st;
  const float *q = c->in[0], *k = c->in[1], *v = c->in[2], *p = c->in[3], *dp = c->in[4];
  float *dq = c->out;
  float *dk = dq + a.bh * a.tq * a.d;
  float *dv = dk + a.bh * a.tk * a.d;
  float *ws = c->workspace;
  int64_t pw = a.dv + 1;
  size_t per = bwd_floats(&a);
  int par = a.bh > 1 && a.bh * a.tq * a.tk * (a.d + a.dv) > PAR_MIN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nb_cpu_threads()) if (par)
  for (int64_t b = 0; b < a.bh; b++)
    bwd_head(&a, q + b * a.tq * a.d, k + b * a.tk * a.d, v + b * a.tk * a.dv, p + b * a.tq * pw,
             dp + b * a.tq * pw, dq + b * a.tq * a.d, dk + b * a.tk * a.d, dv + b * a.tk * a.dv,
             ws + (size_t)thread_id() * per);
  return NB_OK;
}

void nb_cpu_register_attention(nb_cpu_kernel_entry *t) {
  t[NB_OP_ATTENTION].run = run_attention;
  t[NB_OP_ATTENTION].workspace = fwd_workspace;
  t[NB_OP_ATTENTION_BWD].run = run_attention_bwd;
  t[NB_OP_ATTENTION_BWD].workspace = bwd_workspace;
  t[NB_OP_ATTENTION_CACHED].run = run_attention_cached;
  t[NB_OP_ATTENTION_CACHED].workspace = fwd_workspace;
}
