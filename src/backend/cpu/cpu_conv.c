/* 2-D convolution (NCHW, grouped, strided, dilated) and its two gradients.
 * On CPUs with AVX2+FMA the direct kernels of cpu_conv_direct.c run them
 * (alg_of() says which); this file holds the choice, the epilogue plumbing,
 * and im2col + GEMM, which runs everything else: CPUs without AVX2, input
 * gradients of strided convolutions, and NABLA_CONV=im2col. 1x1 unpadded
 * convolutions are plain GEMMs either way.
 *
 * Work goes in chunks of images: im2col of the whole chunk (all groups) into
 * one column matrix, then one GEMM per group whose columns span every image
 * of the chunk, then a scatter into NCHW. Two reasons: OpenBLAS runs its own
 * thread pool, and alternating it with our OpenMP loops image by image left
 * the two pools spinning against each other (a 64-image MNIST step ran 2.5x
 * slower on 2 threads than on 1); and wide GEMMs run faster than many thin
 * ones. Our OpenMP loops run between BLAS calls, never around them. The
 * chunk's buffers live in the plan's workspace, sized by conv_workspace(). */
#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* ip[] layout, as written by src/graph/ops_conv.c */
enum { CV_STRIDE = 0, CV_PAD = 2, CV_DIL = 4, CV_GROUPS = 6, CV_X = 7, CV_W = 11 };

/* Our layout loops go parallel only above this many elements. Handing the
 * cores from OpenBLAS's pthread pool to libgomp's and back costs far more
 * than the copy itself at MNIST/CIFAR sizes (measured on 2 cores: conv
 * kernels 1.3-5.6x slower with parallel im2col at 32K elements), so small and
 * medium layers copy on one thread and leave the cores to BLAS. */
#define PAR_MIN ((int64_t)1 << 22)
/* Workspace bytes that set the chunk size; GEMMs wider than this gain
 * nothing, and a chunk is never smaller than one image. */
#define CHUNK_BYTES ((int64_t)16 << 20)

typedef struct {
  int64_t n, c, h, w;     /* input */
  int64_t k, r, s;        /* weight [K, C/groups, R, S] */
  int64_t p, q;           /* output spatial size */
  int64_t groups, cg, kg; /* channels per group in and out */
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t rows; /* cg * r * s: rows of one group's column matrix */
  int64_t crs;  /* c * r * s = groups * rows: rows of the whole column matrix */
  int64_t pq, hw;
  int64_t chunk; /* images per chunk */
  int direct;    /* 1x1, stride 1, no padding: the input is its own column matrix */
} conv_geom;

/* The output size comes from the dy-shaped tensor of the node, so the kernel
 * agrees with whatever shape the graph validated. */
static void geom_of(const nb_tensor *node, conv_geom *g) {
  const int64_t *ip = node->ip, *x = ip + CV_X, *w = ip + CV_W;
  const nb_tensor *yt = node->op == NB_OP_CONV2D             ? node
                        : node->op == NB_OP_CONV2D_BWD_INPUT ? node->in[0]
                                                             : node->in[1];
  g->n = x[0], g->c = x[1], g->h = x[2], g->w = x[3];
  g->k = w[0], g->r = w[2], g->s = w[3];
  g->p = yt->shape[2], g->q = yt->shape[3];
  g->groups = ip[CV_GROUPS];
  g->cg = w[1];
  g->kg = g->groups ? g->k / g->groups : 0;
  g->sh = ip[CV_STRIDE], g->sw = ip[CV_STRIDE + 1];
  g->ph = ip[CV_PAD], g->pw = ip[CV_PAD + 1];
  g->dh = ip[CV_DIL], g->dw = ip[CV_DIL + 1];
  g->rows = g->cg * g->r * g->s;
  g->crs = g->c * g->r * g->s;
  g->pq = g->p * g->q;
  g->hw = g->h * g->w;
  g->direct = g->r == 1 && g->s == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
  int64_t per_image = (g->crs + g->k) * g->pq * (int64_t)sizeof(float);
  int64_t n = g->n > 0 ? g->n : 1;
  g->chunk = per_image > 0 && per_image * n > CHUNK_BYTES ? CHUNK_BYTES / per_image : n;
  if (g->chunk < 1) g->chunk = 1;
}

/* ---- choice of algorithm -------------------------------------------------------------- */

/* The direct kernels (cpu_conv_direct.c) take every convolution they can
 * on a CPU with AVX2+FMA: the forward pass and the weight gradient always,
 * the input gradient at stride 1 (a stride-1 convolution of the padded dy
 * with the rotated weights). 1x1 unpadded convolutions stay plain GEMMs.
 * NABLA_CONV=im2col forces im2col + GEMM, to compare or to bisect. */
static int want_direct(void) {
  const char *e = getenv("NABLA_CONV");
  return NB_CPU_DIRECT_CONV && nb_conv_direct_available() && !(e && !strcmp(e, "im2col"));
}

static nb_dconv dconv_of(const conv_geom *g) {
  nb_dconv d = {g->n,  g->c, g->h, g->w,  g->k,  g->p,  g->q,  g->groups, g->cg,
                g->kg, g->r, g->s, g->sh, g->sw, g->ph, g->pw, g->dh,     g->dw};
  return d;
}

/* The input gradient of a stride-1 convolution as a convolution of dy:
 * padding d * (k - 1) - pad on each side, channels per group swapped. */
static int dconv_bwd_input(const conv_geom *g, nb_dconv *d) {
  int64_t ph = g->dh * (g->r - 1) - g->ph, pw = g->dw * (g->s - 1) - g->pw;
  if (g->sh != 1 || g->sw != 1 || ph < 0 || pw < 0) return 0;
  *d = (nb_dconv){g->n,  g->k, g->p, g->q, g->c, g->h, g->w, g->groups, g->kg,
                  g->cg, g->r, g->s, 1,    1,    ph,   pw,   g->dh,     g->dw};
  return 1;
}

typedef enum { ALG_GEMM, ALG_IM2COL, ALG_DIRECT } conv_alg;

static conv_alg alg_of(const nb_tensor *node, const conv_geom *g, nb_dconv *d) {
  if (g->direct) return ALG_GEMM;
  if (!want_direct()) return ALG_IM2COL;
  if (node->op == NB_OP_CONV2D_BWD_INPUT) return dconv_bwd_input(g, d) ? ALG_DIRECT : ALG_IM2COL;
  *d = dconv_of(g);
  return ALG_DIRECT;
}

/* im2col: columns [crs, chunk * pq] followed by a staging area [k, chunk * pq]
 * for the NCHW <-> GEMM layout change of y or dy. */
static size_t ws_bytes(const nb_tensor *node, const conv_geom *g) {
  nb_dconv d;
  switch (alg_of(node, g, &d)) {
  case ALG_GEMM: return 0;
  case ALG_DIRECT:
    return node->op == NB_OP_CONV2D_BWD_WEIGHT
               ? nb_conv_direct_bwdw_workspace(&d, nb_cpu_max_threads())
               : nb_conv_direct_fwd_workspace(&d, nb_cpu_max_threads());
  default: return (size_t)(g->chunk * (g->crs + g->k) * g->pq) * sizeof(float);
  }
}

static size_t conv_workspace(const nb_tensor *node) {
  conv_geom g;
  geom_of(node, &g);
  return ws_bytes(node, &g);
}

/* CBLAS takes int dimensions; refuse rather than truncate. */
static nb_status check_blas_dims(const nb_tensor *node, const conv_geom *g) {
  int64_t dims[] = {g->rows, g->kg, g->cg, g->chunk * g->pq, g->hw};
  for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
    if (dims[i] > INT_MAX) {
      char s0[128], s1[128];
      return nb_error(
          NB_ERR_UNSUPPORTED, "%s: input %s with weight %s needs a GEMM dimension above 2^31 - 1",
          nb_op_def_get(node->op)->name, nb_shape_str(4, node->ip + CV_X, s0, sizeof s0),
          nb_shape_str(4, node->ip + CV_W, s1, sizeof s1));
    }
  return NB_OK;
}

static nb_status check_inputs(const nb_kernel_call *c, const conv_geom *g) {
  const nb_tensor *node = c->node;
  for (int i = 0; i < node->n_in; i++)
    if (!nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_INTERNAL, "%s: input %d is not contiguous",
                      nb_op_def_get(node->op)->name, i);
  size_t need = ws_bytes(node, g);
  if (c->workspace_bytes < need)
    return nb_error(NB_ERR_INTERNAL, "%s: workspace of %zu bytes is too small (need %zu)",
                    nb_op_def_get(node->op)->name, c->workspace_bytes, need);
  return check_blas_dims(node, g);
}

/* C = op(A) op(B) + beta C with every dimension allowed to be zero (BLAS
 * rejects lda = 0 and does nothing useful for k = 0). */
static void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *cm,
                 int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == 0.0f)
      for (int64_t i = 0; i < m; i++) memset(cm + i * ldc, 0, (size_t)n * sizeof(float));
    return;
  }
  cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0f, a, (int)(lda > 0 ? lda : 1), b,
              (int)(ldb > 0 ? ldb : 1), beta, cm, (int)(ldc > 0 ? ldc : 1));
}

/* Outputs o in [lo, hi) are those with 0 <= o * stride + off < n_in. */
static void valid_range(int64_t off, int64_t stride, int64_t n_in, int64_t n_out, int64_t *lo,
                        int64_t *hi) {
  int64_t a = off >= 0 ? 0 : (-off + stride - 1) / stride;
  int64_t b = n_in - off <= 0 ? 0 : (n_in - off + stride - 1) / stride;
  if (b > n_out) b = n_out;
  if (a > b) a = b;
  *lo = a;
  *hi = b;
}

/* x [nb, c, h, w] -> col [c * r * s, nb * p * q]: image b fills columns
 * [b * pq, (b + 1) * pq) of every row. */
static void im2col(const conv_geom *g, const float *x, int64_t nb, float *col) {
  const int64_t rs = g->r * g->s, ld = nb * g->pq;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(nb_cpu_threads()) if (nb * g->crs * g->pq > PAR_MIN)
  for (int64_t item = 0; item < nb * g->crs; item++) {
    int64_t b = item / g->crs, row = item % g->crs;
    int64_t ci = row / rs, ki = (row / g->s) % g->r, kj = row % g->s;
    const float *xc = x + (b * g->c + ci) * g->hw;
    float *dst = col + row * ld + b * g->pq;
    int64_t offh = ki * g->dh - g->ph, offw = kj * g->dw - g->pw;
    int64_t p0, p1, q0, q1;
    valid_range(offh, g->sh, g->h, g->p, &p0, &p1);
    valid_range(offw, g->sw, g->w, g->q, &q0, &q1);
    memset(dst, 0, (size_t)(p0 * g->q) * sizeof(float));
    for (int64_t p = p0; p < p1; p++) {
      float *d = dst + p * g->q;
      const float *src = xc + (p * g->sh + offh) * g->w;
      for (int64_t q = 0; q < q0; q++) d[q] = 0.0f;
      if (g->sw == 1)
        memcpy(d + q0, src + q0 + offw, (size_t)(q1 - q0) * sizeof(float));
      else
        for (int64_t q = q0; q < q1; q++) d[q] = src[q * g->sw + offw];
      for (int64_t q = q1; q < g->q; q++) d[q] = 0.0f;
    }
    memset(dst + p1 * g->q, 0, (size_t)((g->p - p1) * g->q) * sizeof(float));
  }
}

/* x [nb, c, h, w] = col2im(col), the adjoint of im2col. Each thread owns
 * whole channel planes, so overlapping windows are summed in a fixed order
 * and results do not depend on the thread count. */
static void col2im(const conv_geom *g, const float *col, int64_t nb, float *x) {
  const int64_t ld = nb * g->pq;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(nb_cpu_threads()) if (nb * g->crs * g->pq > PAR_MIN)
  for (int64_t item = 0; item < nb * g->c; item++) {
    int64_t b = item / g->c, ci = item % g->c;
    float *xc = x + item * g->hw;
    memset(xc, 0, (size_t)g->hw * sizeof(float));
    for (int64_t ki = 0; ki < g->r; ki++)
      for (int64_t kj = 0; kj < g->s; kj++) {
        const float *src = col + ((ci * g->r + ki) * g->s + kj) * ld + b * g->pq;
        int64_t offh = ki * g->dh - g->ph, offw = kj * g->dw - g->pw;
        int64_t p0, p1, q0, q1;
        valid_range(offh, g->sh, g->h, g->p, &p0, &p1);
        valid_range(offw, g->sw, g->w, g->q, &q0, &q1);
        for (int64_t p = p0; p < p1; p++) {
          float *d = xc + (p * g->sh + offh) * g->w;
          const float *s = src + p * g->q;
          for (int64_t q = q0; q < q1; q++) d[q * g->sw + offw] += s[q];
        }
      }
  }
}

/* Between NCHW y [nb, k, pq] and the GEMM layout stage [k, nb * pq]. */
static void to_nchw(const conv_geom *g, const float *stage, int64_t nb, float *y) {
  const int64_t ld = nb * g->pq;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(nb_cpu_threads()) if (nb * g->k * g->pq > PAR_MIN)
  for (int64_t item = 0; item < nb * g->k; item++) {
    int64_t b = item / g->k, k = item % g->k;
    memcpy(y + item * g->pq, stage + k * ld + b * g->pq, (size_t)g->pq * sizeof(float));
  }
}

static void from_nchw(const conv_geom *g, const float *y, int64_t nb, float *stage) {
  const int64_t ld = nb * g->pq;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(nb_cpu_threads()) if (nb * g->k * g->pq > PAR_MIN)
  for (int64_t item = 0; item < nb * g->k; item++) {
    int64_t b = item / g->k, k = item % g->k;
    memcpy(stage + k * ld + b * g->pq, y + item * g->pq, (size_t)g->pq * sizeof(float));
  }
}

/* y[n, group] = W_group [kg, rows] . col(x[n, group]) [rows, pq] */
static nb_status conv_fwd(const nb_kernel_call *c) {
  conv_geom g;
  geom_of(c->node, &g);
  nb_status st = check_inputs(c, &g);
  if (st) return st;
  const float *x = c->in[0], *w = c->in[1];
  float *y = c->out;
  nb_dconv d;
  if (alg_of(c->node, &g, &d) == ALG_DIRECT)
    return nb_conv_direct_fwd(&d, x, w, 0, y, c->workspace, c->workspace_bytes,
                              c->group ? c : NULL);
  if (g.direct) {
    for (int64_t n = 0; n < g.n; n++)
      for (int64_t gi = 0; gi < g.groups; gi++)
        gemm(CblasNoTrans, CblasNoTrans, g.kg, g.pq, g.rows, w + gi * g.kg * g.rows, g.rows,
             x + (n * g.c + gi * g.cg) * g.hw, g.pq, 0.0f, y + (n * g.k + gi * g.kg) * g.pq, g.pq);
    return NB_OK;
  }
  for (int64_t n0 = 0; n0 < g.n; n0 += g.chunk) {
    int64_t nb = g.n - n0 < g.chunk ? g.n - n0 : g.chunk, ld = nb * g.pq;
    float *col = c->workspace, *stage = col + g.crs * ld;
    im2col(&g, x + n0 * g.c * g.hw, nb, col);
    for (int64_t gi = 0; gi < g.groups; gi++)
      gemm(CblasNoTrans, CblasNoTrans, g.kg, ld, g.rows, w + gi * g.kg * g.rows, g.rows,
           col + gi * g.rows * ld, ld, 0.0f, stage + gi * g.kg * ld, ld);
    to_nchw(&g, stage, nb, y + n0 * g.k * g.pq);
  }
  return NB_OK;
}

/* dx[n, group] = col2im(W_group^T [rows, kg] . dy[n, group] [kg, pq]) */
static nb_status conv_bwd_input(const nb_kernel_call *c) {
  conv_geom g;
  geom_of(c->node, &g);
  nb_status st = check_inputs(c, &g);
  if (st) return st;
  const float *dy = c->in[0], *w = c->in[1];
  float *dx = c->out;
  nb_dconv d;
  if (alg_of(c->node, &g, &d) == ALG_DIRECT)
    return nb_conv_direct_fwd(&d, dy, w, 1, dx, c->workspace, c->workspace_bytes,
                              c->group ? c : NULL);
  if (g.direct) {
    for (int64_t n = 0; n < g.n; n++)
      for (int64_t gi = 0; gi < g.groups; gi++)
        gemm(CblasTrans, CblasNoTrans, g.cg, g.pq, g.kg, w + gi * g.kg * g.cg, g.cg,
             dy + (n * g.k + gi * g.kg) * g.pq, g.pq, 0.0f, dx + (n * g.c + gi * g.cg) * g.hw,
             g.pq);
    return NB_OK;
  }
  for (int64_t n0 = 0; n0 < g.n; n0 += g.chunk) {
    int64_t nb = g.n - n0 < g.chunk ? g.n - n0 : g.chunk, ld = nb * g.pq;
    float *col = c->workspace, *stage = col + g.crs * ld;
    from_nchw(&g, dy + n0 * g.k * g.pq, nb, stage);
    for (int64_t gi = 0; gi < g.groups; gi++)
      gemm(CblasTrans, CblasNoTrans, g.rows, ld, g.kg, w + gi * g.kg * g.rows, g.rows,
           stage + gi * g.kg * ld, ld, 0.0f, col + gi * g.rows * ld, ld);
    col2im(&g, col, nb, dx + n0 * g.c * g.hw);
  }
  return NB_OK;
}

/* dW_group [kg, rows] = sum over n of dy[n, group] [kg, pq] . col(x[n, group])^T */
static nb_status conv_bwd_weight(const nb_kernel_call *c) {
  conv_geom g;
  geom_of(c->node, &g);
  nb_status st = check_inputs(c, &g);
  if (st) return st;
  const float *x = c->in[0], *dy = c->in[1];
  float *dw = c->out;
  if (g.k * g.rows == 0) return NB_OK;
  /* an empty batch still has a (zero) weight gradient */
  if (g.n == 0) memset(dw, 0, (size_t)(g.k * g.rows) * sizeof(float));
  nb_dconv d;
  if (g.n > 0 && alg_of(c->node, &g, &d) == ALG_DIRECT) {
    st = nb_conv_direct_bwd_weight(&d, x, dy, dw, c->workspace, c->workspace_bytes);
    return st || !c->group ? st : nb_cpu_epilogue_all(c);
  }
  if (g.direct) {
    for (int64_t n = 0; n < g.n; n++)
      for (int64_t gi = 0; gi < g.groups; gi++)
        gemm(CblasNoTrans, CblasTrans, g.kg, g.cg, g.pq, dy + (n * g.k + gi * g.kg) * g.pq, g.pq,
             x + (n * g.c + gi * g.cg) * g.hw, g.pq, n == 0 ? 0.0f : 1.0f, dw + gi * g.kg * g.cg,
             g.cg);
    return NB_OK;
  }
  for (int64_t n0 = 0; n0 < g.n; n0 += g.chunk) {
    int64_t nb = g.n - n0 < g.chunk ? g.n - n0 : g.chunk, ld = nb * g.pq;
    float *col = c->workspace, *stage = col + g.crs * ld;
    im2col(&g, x + n0 * g.c * g.hw, nb, col);
    from_nchw(&g, dy + n0 * g.k * g.pq, nb, stage);
    for (int64_t gi = 0; gi < g.groups; gi++)
      gemm(CblasNoTrans, CblasTrans, g.kg, g.rows, ld, stage + gi * g.kg * ld, ld,
           col + gi * g.rows * ld, ld, n0 == 0 ? 0.0f : 1.0f, dw + gi * g.kg * g.rows, g.rows);
  }
  return NB_OK;
}

/* An epilogue the direct kernels did not run chunk by chunk (GEMM and
 * im2col paths) runs once over the whole output. */
static nb_status with_epilogue(const nb_kernel_call *c, nb_status (*body)(const nb_kernel_call *),
                               int direct_did_it) {
  nb_status st = body(c);
  if (st || !c->group || direct_did_it) return st;
  return nb_cpu_epilogue_all(c);
}

static int direct_runs_epilogue(const nb_kernel_call *c) {
  conv_geom g;
  nb_dconv d;
  geom_of(c->node, &g);
  return c->node->op != NB_OP_CONV2D_BWD_WEIGHT && alg_of(c->node, &g, &d) == ALG_DIRECT;
}

static nb_status run_conv(const nb_kernel_call *c) {
  return with_epilogue(c, conv_fwd, direct_runs_epilogue(c));
}
static nb_status run_conv_bwd_input(const nb_kernel_call *c) {
  return with_epilogue(c, conv_bwd_input, direct_runs_epilogue(c));
}
/* the direct weight gradient runs its epilogue itself */
static nb_status run_conv_bwd_weight(const nb_kernel_call *c) {
  conv_geom g;
  nb_dconv d;
  geom_of(c->node, &g);
  return with_epilogue(c, conv_bwd_weight, g.n > 0 && alg_of(c->node, &g, &d) == ALG_DIRECT);
}

void nb_cpu_register_conv(nb_cpu_kernel_entry *t) {
  t[NB_OP_CONV2D] = (nb_cpu_kernel_entry){run_conv, conv_workspace, 1};
  t[NB_OP_CONV2D_BWD_INPUT] = (nb_cpu_kernel_entry){run_conv_bwd_input, conv_workspace, 1};
  t[NB_OP_CONV2D_BWD_WEIGHT] = (nb_cpu_kernel_entry){run_conv_bwd_weight, conv_workspace, 1};
}
