/* cuBLASLt bias/activation epilogues on cuda:0 (docs/cuda.md, "What runs on
 * the GPU"; src/backend/cuda/cuda_matmul_lt.cu).
 *
 * Linear layers y = act(x W + b) in the shapes the compiler hands to the
 * matmul kernel with an epilogue group: bias alone, bias + ReLU, bias +
 * GELU (tanh: one cuBLASLt call; erf: the plain path), the bias as the
 * first operand of the add, a [1, N] bias, a row-major W, the GPT's
 * [B, T, C] @ [C, N] (folded into one GEMM), a strided batch with a
 * transposed x and a shared W, a batched W, and N = 1. Each case runs
 * forward only (the activation fuses into the GEMM) and with the gradients
 * of loss = sum(y * R) (nb_graph_backward; the pre-activation is then kept
 * for the backward pass, so only the bias fuses), in f32 and under bf16
 * autocast, on three backends: cpu, cuda:0 and cuda:0 opened with
 * NABLA_CUBLASLT=0 (the plain cuBLAS + epilogue-kernel path). Outputs and
 * gradients are compared by relative L2 error, both GPU paths against the
 * CPU and against each other. Each plan runs three times (the 2nd is
 * recorded as a CUDA graph where the plan allows, the 3rd replays it); the
 * 3rd run's results must equal the 1st's bit for bit.
 *
 * With NABLA_CUDA_VERBOSE=1 the backend prints, per distinct GEMM, whether
 * cuBLASLt found an algorithm for it. Exits 77 (skipped) without a GPU or a
 * CUDA build, 1 when a check failed. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_check.h"
#include "nabla/nabla.h"

enum { ACT_NONE, ACT_RELU, ACT_GELU_TANH, ACT_GELU_ERF };
enum { BIAS_N, BIAS_1N, BIAS_FIRST };

typedef struct {
  const char *name;
  int64_t batch; /* 0: x is [M, K]; else [batch, M, K] */
  int64_t m, k, n;
  int w_rowmajor; /* 1: W is [K, N] as is; 0: W [N, K] transposed (nb_nn_linear) */
  int w_batched;  /* 1: W is [batch, K, N] */
  int x_t;        /* 1: x is fed as [.., K, M] and transposed: a column-major A */
  int bias;       /* BIAS_N: b [N]; BIAS_1N: b [1, N] ([1, 1, N]); BIAS_FIRST: add(b, xW) */
  int act;
} lt_case;

static const lt_case cases[] = {
    {"linear + bias", 0, 64, 96, 48, 0, 0, 0, BIAS_N, ACT_NONE},
    {"linear + bias + relu", 0, 64, 96, 48, 0, 0, 0, BIAS_N, ACT_RELU},
    {"linear + bias + gelu(tanh)", 0, 64, 96, 48, 0, 0, 0, BIAS_N, ACT_GELU_TANH},
    {"linear + bias + gelu(erf), plain", 0, 64, 96, 48, 0, 0, 0, BIAS_N, ACT_GELU_ERF},
    {"b + x W^T, relu", 0, 50, 40, 30, 0, 0, 0, BIAS_FIRST, ACT_RELU},
    {"odd sizes, b [1,N], W [K,N]", 0, 33, 70, 45, 1, 0, 0, BIAS_1N, ACT_GELU_TANH},
    {"GPT [4,32,64] x [64,192] + b, gelu", 4, 32, 64, 192, 0, 0, 0, BIAS_N, ACT_GELU_TANH},
    {"GPT [4,32,64] x [64,64] + b [1,1,N]", 4, 32, 64, 64, 0, 0, 0, BIAS_1N, ACT_NONE},
    {"batched, x^T, W shared, relu", 3, 40, 24, 36, 1, 0, 1, BIAS_N, ACT_RELU},
    {"batched W [3,K,N] + b", 3, 20, 30, 50, 1, 1, 0, BIAS_N, ACT_NONE},
    {"N = 1", 0, 17, 9, 1, 0, 0, 0, BIAS_N, ACT_RELU},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

enum { X, W, B, N_IN };
enum { CPU, GPU_LT, GPU_PLAIN, N_DEV };
static const char *dev_label[N_DEV] = {"cpu", "cuda", "cuda NABLA_CUBLASLT=0"};

typedef struct {
  nb_graph *g;
  nb_tensor *in[N_IN];
  nb_tensor *out[1 + N_IN]; /* y, then the gradients of x, W, b */
  int n_out;
} lt_graph;

static void shapes(const lt_case *c, int64_t sh[N_IN][3], int nd[N_IN]) {
  int xb = c->batch > 0;
  nd[X] = 2 + xb;
  int64_t *x = sh[X];
  if (xb) *x++ = c->batch;
  x[0] = c->x_t ? c->k : c->m;
  x[1] = c->x_t ? c->m : c->k;
  nd[W] = 2 + c->w_batched;
  int64_t *w = sh[W];
  if (c->w_batched) *w++ = c->batch;
  w[0] = c->w_rowmajor ? c->k : c->n;
  w[1] = c->w_rowmajor ? c->n : c->k;
  if (c->bias == BIAS_1N) {
    nd[B] = nd[X];
    for (int d = 0; d < nd[B] - 1; d++) sh[B][d] = 1;
    sh[B][nd[B] - 1] = c->n;
  } else {
    nd[B] = 1;
    sh[B][0] = c->n;
  }
}

/* NULL, or why the graph could not be built. */
static const char *build(const lt_case *c, nb_dtype prec, int grad, lt_graph *lg) {
  static char err[512];
  memset(lg, 0, sizeof *lg);
  int64_t sh[N_IN][3];
  int nd[N_IN];
  shapes(c, sh, nd);
  nb_graph *g = lg->g = nb_graph_new();
  const char *names[N_IN] = {"x", "w", "b"};
  for (int i = 0; i < N_IN; i++) {
    lg->in[i] = nb_input(g, names[i], NB_F32, nd[i], sh[i]);
    if (grad) nb_tensor_set_requires_grad(lg->in[i], 1);
  }
  nb_tensor *x = lg->in[X], *w = lg->in[W];
  if (c->x_t) x = nb_transpose(g, x, nd[X] - 2, nd[X] - 1);
  if (!c->w_rowmajor) w = nb_transpose(g, w, nd[W] - 2, nd[W] - 1);
  nb_graph_set_autocast(g, prec); /* the matmul only, as nb_fit's scope would */
  nb_tensor *mm = nb_matmul(g, x, w);
  nb_graph_set_autocast(g, NB_F32);
  nb_tensor *y = c->bias == BIAS_FIRST ? nb_add(g, lg->in[B], mm) : nb_add(g, mm, lg->in[B]);
  if (c->act == ACT_RELU) y = nb_relu(g, y);
  if (c->act == ACT_GELU_TANH) y = nb_gelu(g, y, 1);
  if (c->act == ACT_GELU_ERF) y = nb_gelu(g, y, 0);
  if (!y || nb_graph_status(g)) {
    snprintf(err, sizeof err, "graph: %s", nb_graph_error(g));
    return err;
  }
  nb_tensor_set_output(y);
  lg->out[lg->n_out++] = y;
  if (!grad) return NULL;
  /* loss = sum(y * R): every output element's gradient path counts */
  int64_t n = nb_tensor_numel(y);
  float *r = malloc((size_t)n * sizeof *r);
  nb_rng rng;
  nb_rng_seed(&rng, 99);
  nb_rng_fill_uniform(&rng, r, (size_t)n, -1.0f, 1.0f);
  nb_tensor *R = nb_constant(g, NB_F32, nb_tensor_ndim(y), nb_tensor_shape(y), r);
  free(r);
  nb_tensor *loss = nb_sum(g, nb_mul(g, y, R), 0, NULL, 0);
  if (!loss || nb_graph_backward(g, loss)) {
    snprintf(err, sizeof err, "backward: %s",
             nb_graph_error(g)[0] ? nb_graph_error(g) : nb_last_error());
    return err;
  }
  for (int i = 0; i < N_IN; i++) {
    nb_tensor *gi = nb_graph_grad(g, lg->in[i]);
    if (!gi) {
      snprintf(err, sizeof err, "no gradient for input %s", names[i]);
      return err;
    }
    nb_tensor_set_output(gi);
    lg->out[lg->n_out++] = gi;
  }
  return NULL;
}

/* The outputs of one device after the 3rd run (and the 1st's, which must
 * be equal), and its plan's CUDA-graph state. */
typedef struct {
  float *v[1 + N_IN];
  int graph;
  int replay_differs; /* output index + 1 whose 3rd run differs from its 1st */
} dev_out;

static int64_t numel_of(const nb_tensor *t) { return nb_tensor_numel(t); }

static const char *run_on(nb_backend *be, const lt_graph *lg, float *const in[N_IN], dev_out *o) {
  static char err[1200];
  memset(o, 0, sizeof *o);
  nb_state *st = NULL;
  nb_plan *p = NULL;
  float *first[1 + N_IN] = {NULL};
  nb_status rc = nb_state_new(be, &st);
  if (!rc) rc = nb_compile(lg->g, be, st, NULL, &p);
  for (int i = 0; i < N_IN && !rc; i++)
    rc = nb_plan_set_input(p, lg->in[i], in[i], (size_t)numel_of(lg->in[i]) * sizeof(float));
  for (int run = 1; run <= 3 && !rc; run++) {
    rc = nb_plan_run(p);
    if (run == 2) continue;
    for (int k = 0; k < lg->n_out && !rc; k++) {
      size_t bytes = (size_t)numel_of(lg->out[k]) * sizeof(float);
      float **dst = run == 1 ? &first[k] : &o->v[k];
      *dst = malloc(bytes);
      rc = nb_plan_get(p, lg->out[k], *dst, bytes);
    }
  }
  if (!rc) {
    o->graph = nb_plan_get_stats(p).graph;
    for (int k = 0; k < lg->n_out && !o->replay_differs; k++)
      if (memcmp(first[k], o->v[k], (size_t)numel_of(lg->out[k]) * sizeof(float)))
        o->replay_differs = k + 1;
  } else {
    snprintf(err, sizeof err, "%s: %s", nb_backend_name(be), nb_last_error());
  }
  for (int k = 0; k < 1 + N_IN; k++) free(first[k]);
  nb_plan_free(p);
  nb_state_free(st);
  return rc ? err : NULL;
}

/* Relative L2 difference of got from want. */
static double rel_l2(const float *got, const float *want, int64_t n) {
  double d = 0, s = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = (double)got[i] - want[i];
    d += e * e;
    s += (double)want[i] * want[i];
  }
  if (d != d) return INFINITY;
  return s > 0 ? sqrt(d / s) : sqrt(d);
}

static int tf32_on(void) {
  const char *e = getenv("NABLA_TF32");
  return e && !strcmp(e, "1");
}

/* The allowed relative L2 error of output k (0 = y) of a case. f32: the
 * GEMMs differ from the CPU's by summation order only; bf16: both sides
 * multiply the same rounded operands, but the backward GEMMs round
 * gradients that already differ in their last bits to bf16. cuBLASLt's
 * GELU epilogue evaluates tanh its own way (possibly a fast hardware
 * approximation), so a fused gelu gets more room, still far below what a
 * wrong layout or a misplaced bias would give (order 1). */
static double tolerance(const lt_case *c, nb_dtype prec, int k) {
  double t = prec == NB_F32 ? 1e-5 : (k == 0 ? 1e-5 : 3e-3);
  if (c->act == ACT_GELU_TANH) t = t > 2e-3 ? t : 2e-3;
  if (tf32_on() && prec == NB_F32) t = t > 5e-3 ? t : 5e-3;
  return t;
}

static void run_case(nb_backend *dev[N_DEV], const lt_case *c, nb_dtype prec, int grad) {
  lt_graph lg;
  const char *err = build(c, prec, grad, &lg);
  char label[160];
  snprintf(label, sizeof label, "%s, %s%s", c->name, nb_dtype_name(prec),
           grad ? ", gradients" : "");
  if (err) {
    EXPECT(0, "%s: %s", label, err);
    nb_graph_free(lg.g);
    return;
  }
  float *in[N_IN];
  for (int i = 0; i < N_IN; i++) {
    int64_t n = numel_of(lg.in[i]);
    in[i] = malloc((size_t)n * sizeof(float));
    nb_rng r;
    nb_rng_seed(&r, 1000u + 17u * (uint64_t)i);
    nb_rng_fill_uniform(&r, in[i], (size_t)n, -1.0f, 1.0f);
  }
  dev_out o[N_DEV];
  int ok = 1;
  for (int d = 0; d < N_DEV; d++) {
    err = run_on(dev[d], &lg, in, &o[d]);
    EXPECT(!err, "%s: %s", label, err ? err : "");
    if (err) ok = 0;
  }
  const char *out_name[1 + N_IN] = {"y", "dx", "dW", "db"};
  if (ok) {
    printf("%-52s graph %2d/%2d", label, o[GPU_LT].graph, o[GPU_PLAIN].graph);
    for (int k = 0; k < lg.n_out; k++) {
      int64_t n = numel_of(lg.out[k]);
      double lt = rel_l2(o[GPU_LT].v[k], o[CPU].v[k], n);
      double plain = rel_l2(o[GPU_PLAIN].v[k], o[CPU].v[k], n);
      double both = rel_l2(o[GPU_LT].v[k], o[GPU_PLAIN].v[k], n);
      double tol = tolerance(c, prec, k);
      printf("  %s %.1e/%.1e/%.1e", out_name[k], lt, plain, both);
      EXPECT(lt <= tol, "%s: %s on cuda vs cpu: relative L2 %.3g above %.1g", label, out_name[k],
             lt, tol);
      EXPECT(plain <= tol, "%s: %s on cuda (NABLA_CUBLASLT=0) vs cpu: relative L2 %.3g above %.1g",
             label, out_name[k], plain, tol);
      EXPECT(both <= tol, "%s: %s, cuBLASLt on vs off: relative L2 %.3g above %.1g", label,
             out_name[k], both, tol);
    }
    printf("\n");
    for (int d = GPU_LT; d < N_DEV; d++)
      EXPECT(!o[d].replay_differs, "%s: %s: %s of the 3rd run differs from the 1st's", label,
             dev_label[d], out_name[o[d].replay_differs - 1]);
  }
  for (int d = 0; d < N_DEV; d++)
    for (int k = 0; k < 1 + N_IN; k++) free(o[d].v[k]);
  for (int i = 0; i < N_IN; i++) free(in[i]);
  nb_graph_free(lg.g);
}

/* Bytes in use on a CUDA backend (its allocator's count). */
static size_t in_use(nb_backend *be) {
  nb_memory_stats ms;
  return nb_backend_memory_stats(be, &ms) == NB_OK ? ms.in_use : 0;
}

int main(void) {
  nb_backend *dev[N_DEV] = {NULL};
  if (nb_backend_new("cuda:0", &dev[GPU_LT]) != NB_OK) {
    printf("SKIPPED: %s\n", nb_last_error());
    return SKIP_CODE;
  }
  /* NABLA_CUBLASLT is read when a backend opens: the second cuda:0 runs
   * the plain path */
  const char *was = getenv("NABLA_CUBLASLT");
  int had = was != NULL, off = was && !strcmp(was, "0");
  char saved[64] = "";
  if (had) snprintf(saved, sizeof saved, "%s", was);
  setenv("NABLA_CUBLASLT", "0", 1);
  nb_status rc = nb_backend_new("cuda:0", &dev[GPU_PLAIN]);
  if (had)
    setenv("NABLA_CUBLASLT", saved, 1);
  else
    unsetenv("NABLA_CUBLASLT");
  if (!rc) rc = nb_backend_new("cpu", &dev[CPU]);
  if (rc) {
    printf("FAIL: %s\n", nb_last_error());
    return 1;
  }
  if (off) printf("note: NABLA_CUBLASLT=0 is set, so both cuda backends run the plain path\n");
  printf("cuBLASLt epilogues on %s: relative L2 error of each output, written\n"
         "cuda vs cpu / cuda NABLA_CUBLASLT=0 vs cpu / the two cuda paths; \"graph\" is\n"
         "nb_plan_stats.graph of the two cuda plans (1: replayed as a CUDA graph)%s\n",
         nb_backend_name(dev[GPU_LT]), tf32_on() ? "; NABLA_TF32=1" : "");
  size_t lt0 = in_use(dev[GPU_LT]), plain0 = in_use(dev[GPU_PLAIN]);
  nb_dtype precs[2] = {NB_F32, NB_BF16};
  for (int p = 0; p < 2; p++)
    for (int grad = 0; grad <= 1; grad++)
      for (int i = 0; i < N_CASES; i++) run_case(dev, &cases[i], precs[p], grad);
  /* The cuBLASLt path allocates its workspace (4 MiB, kept by the backend
   * until it closes) the first time it takes a GEMM, and never with
   * NABLA_CUBLASLT=0: a sign that the comparisons above did compare two
   * different paths. */
  long long grew_lt = (long long)in_use(dev[GPU_LT]) - (long long)lt0;
  long long grew_plain = (long long)in_use(dev[GPU_PLAIN]) - (long long)plain0;
  printf("bytes in use after freeing every plan, more than before: cuda %lld, cuda "
         "NABLA_CUBLASLT=0 %lld\n",
         grew_lt, grew_plain);
  if (!off)
    EXPECT(grew_lt >= grew_plain + (4ll << 20),
           "the cuBLASLt path was never taken (no workspace): %lld vs %lld bytes", grew_lt,
           grew_plain);
  for (int d = 0; d < N_DEV; d++) nb_backend_free(dev[d]);
  printf("%s\n", failures ? "FAILED" : "cuBLASLt epilogues agree with the CPU and the plain path");
  return failures ? 1 : 0;
}
