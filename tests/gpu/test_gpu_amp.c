/* Mixed precision on cuda:0 (docs/cuda.md, "Mixed precision"):
 *
 *  1. kernels: bf16 and f16 matmul (cublasGemmEx, plain, batched and with a
 *     transposed operand) and the three convolutions (cuDNN's half
 *     configurations) against the CPU backend, which widens the same
 *     rounded operands to f32, so both compute on identical inputs;
 *  2. training: the MNIST CNN (models/mnist_cnn.cfg) for STEPS steps on the
 *     same synthetic batches from the same initial weights in fp32, bf16 and
 *     fp16 on cuda:0 (and bf16 on the CPU): the losses side by side, which
 *     must stay close, and the fp16 loss scale and skipped steps;
 *  3. the grad scaler's skipped step on cuda:0: an overflowing step leaves
 *     every variable bit for bit and halves the scale.
 *
 * Failures print the numbers they compared. Exits 77 (skipped) without a
 * GPU or a CUDA build. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_check.h"
#include "nabla/nabla.h"

#define STEPS 10
#define BATCH 32

/* Relative L2 difference of got from want, and the largest absolute one. */
static double rel_l2(const float *got, const float *want, int64_t n, double *max_abs) {
  double d = 0, s = 0, m = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = (double)got[i] - want[i];
    d += e * e;
    s += (double)want[i] * want[i];
    if (fabs(e) > m || e != e) m = e != e ? INFINITY : fabs(e);
  }
  if (max_abs) *max_abs = m;
  return s > 0 ? sqrt(d / s) : sqrt(d);
}

/* ---- 1. kernels -------------------------------------------------------------------- */

typedef struct {
  char name[48];
  nb_tensor *out;
  double tol; /* relative L2 */
} probe;

static void add_probe(probe *pr, int *n, const char *name, nb_tensor *out, double tol) {
  snprintf(pr[*n].name, sizeof pr[*n].name, "%s", name);
  pr[*n].out = out;
  pr[*n].tol = tol;
  (*n)++;
}

/* The probes' graph for half dtype dt: inputs x0..x5 (f32, fed the same on
 * both devices) and the outputs to compare. */
static nb_graph *kernel_graph(nb_dtype dt, nb_tensor **in, probe *pr, int *n_pr) {
  nb_graph *g = nb_graph_new();
  int64_t as[2] = {64, 96}, bs[2] = {96, 48}, a3s[3] = {4, 32, 40}, bts[2] = {24, 40};
  int64_t xs[4] = {4, 8, 15, 15}, ws[4] = {16, 8, 3, 3};
  in[0] = nb_input(g, "a", NB_F32, 2, as);
  in[1] = nb_input(g, "b", NB_F32, 2, bs);
  in[2] = nb_input(g, "a3", NB_F32, 3, a3s);
  in[3] = nb_input(g, "bt", NB_F32, 2, bts);
  in[4] = nb_input(g, "x", NB_F32, 4, xs);
  in[5] = nb_input(g, "w", NB_F32, 4, ws);
  /* matmul output is f32 on both: only summation order differs. cuDNN's
   * result is rounded to the half dtype before it is widened: one rounding
   * (2^-9 relative for bf16, 2^-12 for f16) on top. */
  double mm = 1e-5, cv = dt == NB_BF16 ? 4e-3 : 5e-4;
  int n = 0;
  nb_graph_set_autocast(g, dt);
  add_probe(pr, &n, "matmul [64,96]x[96,48]", nb_matmul(g, in[0], in[1]), mm);
  add_probe(pr, &n, "batched matmul x b^T", nb_matmul(g, in[2], nb_transpose(g, in[3], 0, 1)), mm);
  for (int stride = 1; stride <= 2; stride++) {
    nb_conv2d_params p = nb_conv2d_defaults();
    p.stride[0] = p.stride[1] = stride;
    p.padding[0] = p.padding[1] = 1;
    nb_tensor *y = nb_conv2d(g, in[4], in[5], &p);
    char nm[48];
    snprintf(nm, sizeof nm, "conv2d stride %d", stride);
    add_probe(pr, &n, nm, y, cv);
    /* dy: a fixed function of y, so its values are ordinary activations */
    nb_tensor *dy = nb_tanh(g, nb_mul(g, y, nb_scalar(g, 0.1f)));
    snprintf(nm, sizeof nm, "conv2d_backward_input s%d", stride);
    add_probe(pr, &n, nm, nb_conv2d_backward_input(g, dy, in[5], xs, &p), cv);
    snprintf(nm, sizeof nm, "conv2d_backward_weight s%d", stride);
    add_probe(pr, &n, nm, nb_conv2d_backward_weight(g, in[4], dy, ws, &p), cv);
  }
  nb_graph_set_autocast(g, NB_F32);
  for (int i = 0; i < n; i++) nb_tensor_set_output(pr[i].out);
  *n_pr = n;
  return g;
}

static void check_kernels(nb_backend *gpu, nb_backend *cpu, nb_dtype dt) {
  nb_tensor *in[2][6];
  probe pr[2][16];
  int n = 0;
  nb_graph *g[2];
  nb_state *st[2] = {NULL, NULL};
  nb_plan *plan[2] = {NULL, NULL};
  nb_backend *be[2] = {cpu, gpu};
  float *data[6];
  for (int k = 0; k < 2; k++) g[k] = kernel_graph(dt, in[k], pr[k], &n);
  nb_rng r;
  nb_rng_seed(&r, 42);
  for (int i = 0; i < 6; i++) {
    int64_t numel = nb_tensor_numel(in[0][i]);
    data[i] = malloc((size_t)numel * sizeof(float));
    nb_rng_fill_normal(&r, data[i], (size_t)numel, 0.0f, 1.0f);
  }
  nb_status rc = NB_OK;
  for (int k = 0; k < 2 && !rc; k++) {
    rc = nb_graph_status(g[k]);
    if (!rc) rc = nb_state_new(be[k], &st[k]);
    if (!rc) rc = nb_compile(g[k], be[k], st[k], NULL, &plan[k]);
    for (int i = 0; i < 6 && !rc; i++)
      rc = nb_plan_set_input(plan[k], in[k][i], data[i],
                             (size_t)nb_tensor_numel(in[k][i]) * sizeof(float));
    if (!rc) rc = nb_plan_run(plan[k]);
    EXPECT(!rc, "%s %s kernels: %s", nb_backend_name(be[k]), nb_dtype_name(dt), nb_last_error());
  }
  printf("%s kernels, cuda:0 vs cpu (same rounded operands):\n", nb_dtype_name(dt));
  for (int i = 0; i < n && !rc; i++) {
    int64_t numel = nb_tensor_numel(pr[0][i].out);
    float *a = malloc((size_t)numel * sizeof *a), *b = malloc((size_t)numel * sizeof *b);
    rc = nb_plan_get(plan[0], pr[0][i].out, a, (size_t)numel * sizeof *a);
    if (!rc) rc = nb_plan_get(plan[1], pr[1][i].out, b, (size_t)numel * sizeof *b);
    EXPECT(!rc, "reading %s: %s", pr[0][i].name, nb_last_error());
    double max_abs = 0, e = rc ? 0 : rel_l2(b, a, numel, &max_abs);
    printf("  %-28s rel L2 %.2e  max |diff| %.2e  (limit %.0e)  first: cpu %.6g cuda %.6g\n",
           pr[0][i].name, e, max_abs, pr[0][i].tol, (double)a[0], (double)b[0]);
    EXPECT(!rc && e <= pr[0][i].tol, "%s %s: relative L2 %.3g above %.1g", nb_dtype_name(dt),
           pr[0][i].name, e, pr[0][i].tol);
    free(a);
    free(b);
  }
  for (int i = 0; i < 6; i++) free(data[i]);
  for (int k = 0; k < 2; k++) {
    nb_plan_free(plan[k]);
    nb_state_free(st[k]);
    nb_graph_free(g[k]);
  }
}

/* ---- 2. training ------------------------------------------------------------------- */

typedef struct {
  nb_state *st;
  nb_graph *g;
  nb_plan *plan;
  nb_optimizer *opt;
  nb_tensor *x, *y, *loss;
} runner;

static nb_status build(nb_model *m, nb_precision prec, nb_backend *be, runner *r) {
  nb_status rc = nb_model_set_precision(m, prec);
  const nb_recipe *rec = nb_model_recipe(m);
  int64_t batch = BATCH;
  if (!rc) rc = nb_state_new(be, &r->st);
  r->g = nb_graph_new();
  r->x = nb_model_new_input(m, r->g, "x", batch);
  r->y = nb_input(r->g, "labels", NB_I64, 1, &batch);
  nb_nn nn = {.g = r->g, .training = 1, .seed = rec->seed, .init = NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  /* as nb_fit builds it: autocast over the network, the recipe's update
   * (fp16: with the grad scaler) */
  if (!rc) rc = nb_graph_set_autocast(r->g, nb_precision_dtype(prec));
  if (!rc) rc = nb_model_build(m, &nn, r->x, &logits);
  if (!rc) rc = nb_graph_set_autocast(r->g, NB_F32);
  if (!rc) {
    r->loss = nb_cross_entropy(r->g, logits, r->y, 0.0f);
    nb_tensor_set_output(r->loss);
    rc = nb_recipe_update(rec, r->g, r->loss, NULL, &r->opt);
  }
  if (!rc) rc = nb_compile(r->g, be, r->st, NULL, &r->plan);
  return rc;
}

static void runner_free(runner *r) {
  nb_optimizer_free(r->opt);
  nb_plan_free(r->plan);
  nb_graph_free(r->g);
  nb_state_free(r->st);
}

static float read_var(const nb_state *st, const char *name) {
  float v = NAN;
  if (nb_state_read(st, name, &v, sizeof v))
    printf("  (cannot read %s: %s)\n", name, nb_last_error());
  return v;
}

static void check_training(nb_backend *gpu, nb_backend *cpu, nb_model *m) {
  enum { FP32, BF16, FP16, CPU_BF16, RUNS };
  const char *label[RUNS] = {"cuda fp32", "cuda bf16", "cuda fp16", "cpu bf16"};
  nb_precision prec[RUNS] = {NB_PRECISION_FP32, NB_PRECISION_BF16, NB_PRECISION_FP16,
                             NB_PRECISION_BF16};
  nb_backend *dev[RUNS] = {gpu, gpu, gpu, cpu};
  runner R[RUNS];
  memset(R, 0, sizeof R);
  nb_status rc = NB_OK;
  for (int k = 0; k < RUNS && !rc; k++) {
    rc = build(m, prec[k], dev[k], &R[k]);
    if (rc) printf("FAIL: %s: building the training step: %s\n", label[k], nb_last_error());
  }
  if (rc) {
    failures++;
    for (int k = 0; k < RUNS; k++) runner_free(&R[k]);
    return;
  }
  for (int k = 0; k < RUNS; k++) {
    nb_plan_stats ps = nb_plan_get_stats(R[k].plan);
    printf("%-10s step: %d kernels, arena %.2f MiB\n", label[k], ps.kernels,
           (double)ps.arena_bytes / 1048576.0);
  }
  float *x = malloc((size_t)BATCH * 784 * sizeof *x);
  int64_t y[BATCH];
  float loss[STEPS][RUNS];
  double secs[RUNS] = {0};
  printf("%5s %12s %12s %12s %12s\n", "step", label[0], label[1], label[2], label[3]);
  for (int step = 1; step <= STEPS && !failures; step++) {
    gpu_make_batch(step, BATCH, x, y);
    for (int k = 0; k < RUNS; k++) {
      double t0 = now();
      rc = nb_plan_set_input(R[k].plan, R[k].x, x, (size_t)BATCH * 784 * sizeof *x);
      if (!rc) rc = nb_plan_set_input(R[k].plan, R[k].y, y, sizeof y);
      if (!rc) rc = nb_optimizer_feed(R[k].opt, R[k].plan, step, 1e-3f);
      if (!rc) rc = nb_plan_run(R[k].plan);
      if (!rc) rc = nb_plan_get(R[k].plan, R[k].loss, &loss[step - 1][k], sizeof(float));
      if (step > 1) secs[k] += now() - t0;
      EXPECT(!rc, "%s, step %d: %s", label[k], step, nb_last_error());
    }
    printf("%5d %12.6f %12.6f %12.6f %12.6f\n", step, loss[step - 1][0], loss[step - 1][1],
           loss[step - 1][2], loss[step - 1][3]);
  }
  float scale = read_var(R[FP16].st, NB_GRAD_SCALER_SCALE);
  float skipped = read_var(R[FP16].st, NB_GRAD_SCALER_SKIPPED);
  printf("fp16 loss scale %g after %d steps, %g skipped (gradient overflow)\n", (double)scale,
         STEPS, (double)skipped);
  printf("mean step time (steps 2-%d, incl. input upload and loss read):", STEPS);
  for (int k = 0; k < RUNS; k++) printf("  %s %.2f ms", label[k], 1e3 * secs[k] / (STEPS - 1));
  printf("\n");
  EXPECT(skipped == skipped && skipped < STEPS / 2, "fp16 skipped %g of %d steps", (double)skipped,
         STEPS);
  EXPECT(scale >= 1.0f, "fp16 loss scale %g", (double)scale);
  for (int s = 0; s < STEPS && !failures; s++) {
    double f = loss[s][FP32];
    for (int k = 1; k < RUNS; k++)
      EXPECT(isfinite(loss[s][k]), "%s: loss %g at step %d", label[k], (double)loss[s][k], s + 1);
    /* step 1 runs the same weights forward: only rounding differs */
    double tb = s == 0 ? 0.01 : 0.05, th = s == 0 ? 0.002 : (skipped > 0 ? 0.05 : 0.01);
    EXPECT(fabs(loss[s][BF16] - f) <= tb * (1 + fabs(f)),
           "step %d: bf16 loss %.6g vs fp32 %.6g (limit %.3g relative)", s + 1,
           (double)loss[s][BF16], f, tb);
    EXPECT(fabs(loss[s][FP16] - f) <= th * (1 + fabs(f)),
           "step %d: fp16 loss %.6g vs fp32 %.6g (limit %.3g relative)", s + 1,
           (double)loss[s][FP16], f, th);
    /* the GPU's bf16 convolutions round their outputs, the CPU's do not */
    EXPECT(fabs(loss[s][BF16] - loss[s][CPU_BF16]) <= tb * (1 + fabs(f)),
           "step %d: bf16 loss %.6g on cuda vs %.6g on cpu", s + 1, (double)loss[s][BF16],
           (double)loss[s][CPU_BF16]);
  }
  EXPECT(loss[STEPS - 1][BF16] < loss[0][BF16], "bf16 did not learn: %g -> %g",
         (double)loss[0][BF16], (double)loss[STEPS - 1][BF16]);
  free(x);
  for (int k = 0; k < RUNS; k++) runner_free(&R[k]);
}

/* ---- 3. a skipped step on the GPU ---------------------------------------------------- */

/* Reads every variable of st except the scaler's into one buffer. */
static float *read_model_vars(const nb_state *st, int64_t *total) {
  int n = nb_state_count(st);
  int64_t sum = 0;
  for (int i = 0; i < n; i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    nb_state_entry(st, i, &name, NULL, &nd, &shape);
    if (strncmp(name, "amp.", 4)) {
      int64_t k = 1;
      for (int d = 0; d < nd; d++) k *= shape[d];
      sum += k;
    }
  }
  float *v = malloc((size_t)(sum > 0 ? sum : 1) * sizeof *v), *at = v;
  for (int i = 0; i < n; i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    nb_state_entry(st, i, &name, NULL, &nd, &shape);
    if (!strncmp(name, "amp.", 4)) continue;
    int64_t k = 1;
    for (int d = 0; d < nd; d++) k *= shape[d];
    if (nb_state_read(st, name, at, (size_t)k * sizeof *at))
      printf("  (cannot read %s: %s)\n", name, nb_last_error());
    at += k;
  }
  *total = sum;
  return v;
}

/* loss = k * mean((x W)^2) with f16 autocast and a grad scaler (init 1024):
 * k = inf overflows every gradient, so the step must leave W, Adam's
 * moments and its step count bit for bit and halve the scale; k = 1 then
 * updates them. The same checks as tests/test_amp.c, on cuda:0. */
static void check_skip(nb_backend *gpu) {
  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {64, 32}, ws[2] = {32, 16};
  nb_init init = {NB_INIT_UNIFORM, -1.0f, 1.0f, 5};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs), *k = nb_input(g, "k", NB_F32, 0, NULL);
  nb_tensor *w = nb_param(g, "w", 2, ws, init);
  nb_graph_set_autocast(g, NB_F16);
  nb_tensor *y = nb_matmul(g, x, w);
  nb_graph_set_autocast(g, NB_F32);
  nb_tensor *loss = nb_mul(g, nb_mean(g, nb_square(g, y), 0, NULL, 0), k);
  nb_grad_scaler_options o = nb_grad_scaler_defaults();
  o.init_scale = 1024.0f;
  nb_grad_scaler *gs = NULL;
  nb_optimizer *opt = NULL;
  nb_state *st = NULL;
  nb_plan *p = NULL;
  nb_status rc = nb_grad_scaler_new(g, loss, &o, &gs);
  if (!rc) rc = nb_graph_backward(g, nb_grad_scaler_loss(gs));
  if (!rc) rc = nb_grad_scaler_unscale(gs);
  if (!rc) rc = nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &opt);
  if (!rc) rc = nb_grad_scaler_update(gs);
  nb_tensor *found = nb_grad_scaler_found_inf(gs);
  if (!rc) {
    nb_tensor_set_output(found);
    rc = nb_state_new(gpu, &st);
  }
  if (!rc) rc = nb_compile(g, gpu, st, NULL, &p);
  float *xv = malloc((size_t)64 * 32 * sizeof *xv);
  nb_rng r;
  nb_rng_seed(&r, 9);
  nb_rng_fill_normal(&r, xv, 64 * 32, 0.0f, 1.0f);
  if (!rc) rc = nb_plan_set_input(p, x, xv, (size_t)64 * 32 * sizeof *xv);
  float f[3] = {-1, -1, -1};
  const float kv[3] = {1.0f, INFINITY, 1.0f};
  int64_t n0 = 0;
  float *before = NULL, *after = NULL;
  for (int step = 0; step < 3 && !rc; step++) {
    if (step == 1) before = read_model_vars(st, &n0);
    rc = nb_plan_set_input(p, k, &kv[step], sizeof kv[step]);
    if (!rc) rc = nb_optimizer_feed(opt, p, step + 1, 1e-3f);
    if (!rc) rc = nb_plan_run(p);
    if (!rc) rc = nb_plan_get(p, found, &f[step], sizeof f[step]);
    if (step == 1 && !rc) {
      int64_t n1;
      after = read_model_vars(st, &n1);
      EXPECT(n1 == n0 && !memcmp(before, after, (size_t)n0 * sizeof *before),
             "a skipped step on cuda:0 changed the weights or Adam's state");
      EXPECT(read_var(st, NB_GRAD_SCALER_SCALE) == 512.0f,
             "scale %g after a skipped step, want 512", (double)read_var(st, NB_GRAD_SCALER_SCALE));
    }
  }
  EXPECT(!rc, "scaler graph on cuda:0: %s", nb_last_error());
  printf("grad scaler on cuda:0: found_inf %g %g %g (want 0 1 0), scale %g, skipped %g, Adam "
         "steps %g\n",
         (double)f[0], (double)f[1], (double)f[2], (double)read_var(st, NB_GRAD_SCALER_SCALE),
         (double)read_var(st, NB_GRAD_SCALER_SKIPPED), (double)read_var(st, "optim.step"));
  EXPECT(f[0] == 0 && f[1] == 1 && f[2] == 0, "found_inf %g %g %g, want 0 1 0", (double)f[0],
         (double)f[1], (double)f[2]);
  EXPECT(read_var(st, "optim.step") == 2.0f, "Adam counted %g steps, want 2",
         (double)read_var(st, "optim.step"));
  if (after) {
    int64_t n2;
    float *last = read_model_vars(st, &n2);
    EXPECT(memcmp(after, last, (size_t)n2 * sizeof *last) != 0,
           "the finite step after the skipped one did not update");
    free(last);
  }
  free(before);
  free(after);
  free(xv);
  nb_grad_scaler_free(gs);
  nb_optimizer_free(opt);
  nb_plan_free(p);
  nb_state_free(st);
  nb_graph_free(g);
}

int main(void) {
  nb_backend *gpu = NULL, *cpu = NULL;
  if (nb_backend_new("cuda:0", &gpu) != NB_OK) {
    printf("SKIPPED: %s\n", nb_last_error());
    return SKIP_CODE;
  }
  nb_model *m = NULL;
  nb_status rc = nb_backend_new("cpu", &cpu);
  if (!rc) rc = nb_model_load(gpu_model_path("mnist_cnn.cfg"), &m);
  if (rc) {
    printf("FAIL: %s\n", nb_last_error());
    return 1;
  }
  check_kernels(gpu, cpu, NB_BF16);
  check_kernels(gpu, cpu, NB_F16);
  check_training(gpu, cpu, m);
  check_skip(gpu);
  nb_memory_stats ms;
  if (nb_backend_memory_stats(gpu, &ms) == NB_OK)
    printf("%s memory: peak %.1f MiB in use, %.1f MiB reserved\n", nb_backend_name(gpu),
           (double)ms.peak / 1048576.0, (double)ms.reserved / 1048576.0);
  nb_model_free(m);
  nb_backend_free(cpu);
  nb_backend_free(gpu);
  printf("%s\n", failures ? "FAILED" : "bf16 and fp16 train like fp32 on cuda:0");
  return failures ? 1 : 0;
}
