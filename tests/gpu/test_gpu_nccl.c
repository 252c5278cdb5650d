/* The data-parallel gradient reduction on cuda:0 through NCCL, as a job of
 * one rank (NB_DIST_SELF: no MPI, no launcher):
 *   (a) nb_allreduce_mean of known buffers (a transposed view, a scaled
 *       vector, 3M random floats) on cuda:0 gives them back exactly: the
 *       sum over one rank is the buffer, and the mean scales it by 1;
 *   (b) the MNIST CNN (models/mnist_cnn.cfg, Adam) trained for a few steps
 *       on cuda:0 with its gradients averaged in the step (several buckets,
 *       started during backward) equals the same training without them:
 *       every loss and every variable to 1e-6 of the tensor's largest value.
 *       Two plain runs are compared first, so that run-to-run noise of the
 *       GPU libraries (if any) is told apart from the reduction.
 *
 * Exits 77 (skipped) without a GPU or a CUDA build, and when NCCL cannot
 * be loaded (the line says why: install it or set NABLA_NCCL_LIBRARY). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/dist/nccl_api.h"
#include "gpu_check.h"
#include "nabla/nabla.h"

#define STEPS 6
#define BATCH 32
#define BIG   (3 * 1024 * 1024)

static int is_nccl_missing(const char *msg) {
  return strstr(msg, "NCCL not found") || strstr(msg, "not a usable NCCL");
}

static int count_op(const nb_graph *g, const char *op) {
  int n = 0;
  for (int i = 0; i < nb_graph_node_count(g); i++)
    n += !strcmp(nb_tensor_op_name(nb_graph_node(g, i)), op);
  return n;
}

/* ---- (a) known buffers ------------------------------------------------------- */

/* 0 = pass, 1 = fail, SKIP_CODE = no NCCL */
static int check_buffers(nb_backend *gpu, nb_dist *d) {
  nb_state *st = NULL;
  nb_status rc = nb_state_new(gpu, &st);
  nb_graph *g = nb_graph_new();
  int64_t sa[2] = {3, 4}, sb[1] = {5}, sc[1] = {BIG};
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, sa), *b = nb_input(g, "b", NB_F32, 1, sb);
  nb_tensor *c = nb_input(g, "c", NB_F32, 1, sc);
  nb_tensor *xs[3] = {nb_transpose(g, a, 0, 1), nb_mul(g, b, nb_scalar(g, 2.0f)), c}, *outs[3];
  if (!rc) rc = nb_allreduce_mean(g, d, 3, xs, outs);
  nb_tensor *ys[3] = {NULL, NULL, NULL};
  for (int i = 0; i < 3 && !rc; i++) {
    ys[i] = nb_add(g, outs[i], nb_scalar(g, 0.0f));
    nb_tensor_set_output(ys[i]);
  }
  nb_plan *p = NULL;
  if (!rc) rc = nb_compile(g, gpu, st, NULL, &p);
  if (rc && is_nccl_missing(nb_last_error())) {
    printf("SKIPPED: NCCL cannot be loaded on this GPU machine: %s\n", nb_last_error());
    nb_graph_free(g);
    nb_state_free(st);
    return SKIP_CODE;
  }
  EXPECT(!rc, "compiling allreduce_mean on %s: %s", nb_backend_name(gpu), nb_last_error());
  float av[12], bv[5], want0[12], want1[5], got0[12], got1[5];
  float *cv = malloc((size_t)BIG * sizeof *cv), *got2 = malloc((size_t)BIG * sizeof *got2);
  nb_rng r;
  nb_rng_seed(&r, 42);
  nb_rng_fill_normal(&r, cv, BIG, 0.0f, 3.0f);
  for (int i = 0; i < 12; i++) av[i] = (float)i * 0.5f - 2.0f;
  for (int i = 0; i < 5; i++) bv[i] = (float)(i * i) - 3.0f;
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++) want0[j * 3 + i] = av[i * 4 + j];
  for (int i = 0; i < 5; i++) want1[i] = 2.0f * bv[i];
  for (int run = 0; run < 3 && !rc && !failures; run++) { /* later runs reuse the communicator */
    cv[run] += 1.0f;
    rc = nb_plan_set_input(p, a, av, sizeof av);
    if (!rc) rc = nb_plan_set_input(p, b, bv, sizeof bv);
    if (!rc) rc = nb_plan_set_input(p, c, cv, (size_t)BIG * sizeof *cv);
    if (!rc) rc = nb_plan_run(p);
    if (!rc) rc = nb_plan_get(p, ys[0], got0, sizeof got0);
    if (!rc) rc = nb_plan_get(p, ys[1], got1, sizeof got1);
    if (!rc) rc = nb_plan_get(p, ys[2], got2, (size_t)BIG * sizeof *got2);
    EXPECT(!rc, "run %d: %s", run, nb_last_error());
    if (rc) break;
    double worst = 0;
    for (int i = 0; i < 12; i++) worst = fmax(worst, fabs((double)got0[i] - want0[i]));
    for (int i = 0; i < 5; i++) worst = fmax(worst, fabs((double)got1[i] - want1[i]));
    for (int64_t i = 0; i < BIG; i++) worst = fmax(worst, fabs((double)got2[i] - cv[i]));
    printf("one-rank allreduce of %d floats in 3 tensors (run %d): max |got - want| = %g\n",
           12 + 5 + BIG, run + 1, worst);
    EXPECT(worst == 0, "the mean over one rank must be the buffer itself (max diff %g)", worst);
  }
  free(cv);
  free(got2);
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
  return failures ? 1 : 0;
}

/* ---- (b) MNIST CNN steps ----------------------------------------------------- */

typedef struct {
  nb_state *st;
  nb_graph *g;
  nb_plan *plan;
  nb_optimizer *opt;
  nb_tensor *x, *y, *loss;
  float losses[STEPS];
} run;

/* Trains STEPS steps on gpu; with d, the gradients are averaged over d. */
static nb_status train(const nb_model *m, nb_backend *gpu, nb_dist *d, run *R) {
  memset(R, 0, sizeof *R);
  const nb_recipe *rec = nb_model_recipe(m);
  int64_t batch = BATCH;
  nb_status rc = nb_state_new(gpu, &R->st);
  R->g = nb_graph_new();
  R->x = nb_model_new_input(m, R->g, "x", batch);
  R->y = nb_input(R->g, "labels", NB_I64, 1, &batch);
  nb_nn nn = {.g = R->g, .training = 1, .seed = rec->seed, .init = NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  if (!rc) rc = nb_model_build(m, &nn, R->x, &logits);
  if (!rc) {
    R->loss = nb_cross_entropy(R->g, logits, R->y, 0.0f);
    nb_tensor_set_output(R->loss);
    rc = nb_recipe_update_dist(rec, R->g, R->loss, d, NULL, &R->opt);
  }
  if (!rc) rc = nb_compile(R->g, gpu, R->st, NULL, &R->plan);
  if (rc) return rc;
  float *x = malloc((size_t)BATCH * 784 * sizeof *x);
  int64_t y[BATCH];
  for (int step = 1; step <= STEPS && !rc; step++) {
    gpu_make_batch(step, BATCH, x, y);
    rc = nb_plan_set_input(R->plan, R->x, x, (size_t)BATCH * 784 * sizeof *x);
    if (!rc) rc = nb_plan_set_input(R->plan, R->y, y, sizeof y);
    if (!rc) rc = nb_optimizer_feed(R->opt, R->plan, step, 1e-3f);
    if (!rc) rc = nb_plan_run(R->plan);
    if (!rc) rc = nb_plan_get(R->plan, R->loss, &R->losses[step - 1], sizeof(float));
  }
  free(x);
  return rc;
}

static void run_free(run *R) {
  nb_optimizer_free(R->opt);
  nb_plan_free(R->plan);
  nb_graph_free(R->g);
  nb_state_free(R->st);
}

/* Largest |a - b| / max |a| over the variables of two states, and where. */
static double state_diff(const nb_state *a, const nb_state *b, const char **where) {
  double worst = 0;
  *where = "";
  for (int i = 0; i < nb_state_count(a); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    if (nb_state_entry(a, i, &name, NULL, &nd, &shape)) return INFINITY;
    int64_t n = 1;
    for (int k = 0; k < nd; k++) n *= shape[k];
    float *u = malloc((size_t)n * sizeof *u), *v = malloc((size_t)n * sizeof *v);
    nb_status rc = nb_state_read(a, name, u, (size_t)n * sizeof *u);
    if (!rc) rc = nb_state_read(b, name, v, (size_t)n * sizeof *v);
    double big = 0, d = 0;
    for (int64_t k = 0; !rc && k < n; k++) {
      big = fmax(big, fabs((double)u[k]));
      d = fmax(d, fabs((double)u[k] - v[k]));
    }
    double rel = rc ? INFINITY : d / (big > 0 ? big : 1);
    if (rel > worst) {
      worst = rel;
      *where = name;
    }
    free(u);
    free(v);
  }
  return worst;
}

static double loss_diff(const run *a, const run *b) {
  double worst = 0;
  for (int s = 0; s < STEPS; s++)
    worst = fmax(worst, fabs((double)a->losses[s] - b->losses[s]) / fabs((double)a->losses[s]));
  return worst;
}

static int check_training(nb_backend *gpu, nb_dist *d) {
  nb_model *m = NULL;
  if (nb_model_load(gpu_model_path("mnist_cnn.cfg"), &m)) {
    printf("FAIL: %s\n", nb_last_error());
    return 1;
  }
  /* 64 KiB buckets: mnist_cnn's 225,034 gradients go in several, and the
   * first starts while backward still runs */
  setenv("NABLA_DIST_BUCKET_KB", "64", 1);
  run plain[2], dist;
  memset(plain, 0, sizeof plain);
  memset(&dist, 0, sizeof dist);
  nb_status rc = NB_OK;
  for (int k = 0; k < 2 && !rc; k++) {
    rc = train(m, gpu, NULL, &plain[k]);
    EXPECT(!rc, "plain training run %d on %s: %s", k + 1, nb_backend_name(gpu), nb_last_error());
  }
  if (!rc) {
    rc = train(m, gpu, d, &dist);
    EXPECT(!rc, "one-rank distributed training on %s: %s", nb_backend_name(gpu), nb_last_error());
  }
  if (!rc) {
    int buckets = count_op(dist.g, "allreduce_start");
    printf("distributed step: %d gradient buckets (allreduce_start/_wait on %s), plain step: %d\n",
           buckets, nb_backend_name(gpu), count_op(plain[0].g, "allreduce_start"));
    EXPECT(buckets > 1 && count_op(dist.g, "allreduce_wait") == buckets,
           "expected several buckets, got %d", buckets);
    printf("%5s %12s %12s\n", "step", "plain loss", "dist loss");
    for (int s = 0; s < STEPS; s++)
      printf("%5d %12.7f %12.7f\n", s + 1, plain[0].losses[s], dist.losses[s]);
    const char *w0, *w1;
    double noise = state_diff(plain[0].st, plain[1].st, &w0);
    double diff = state_diff(plain[0].st, dist.st, &w1);
    double lnoise = loss_diff(&plain[0], &plain[1]), ldiff = loss_diff(&plain[0], &dist);
    printf("plain vs plain: losses %.3g, variables %.3g (max |diff| / max |value|%s%s)\n", lnoise,
           noise, *w0 ? ", " : "", w0);
    printf("one-rank NCCL vs plain: losses %.3g, variables %.3g (max |diff| / max |value|%s%s)\n",
           ldiff, diff, *w1 ? ", " : "", w1);
    /* run-to-run noise of the libraries, when there is any, is allowed on
     * top of the 1e-6 the reduction itself must meet */
    double tol = 1e-6 + 4 * noise, ltol = 1e-6 + 4 * lnoise;
    EXPECT(diff <= tol, "variable %s: one-rank NCCL training differs by %.3g (allowed %.3g)", w1,
           diff, tol);
    EXPECT(ldiff <= ltol, "losses differ by %.3g relative (allowed %.3g)", ldiff, ltol);
  }
  for (int k = 0; k < 2; k++) run_free(&plain[k]);
  run_free(&dist);
  nb_model_free(m);
  return failures ? 1 : 0;
}

int main(void) {
  nb_backend *gpu = NULL;
  if (nb_backend_new("cuda:0", &gpu) != NB_OK) {
    printf("SKIPPED: %s\n", nb_last_error());
    return SKIP_CODE;
  }
  const nb_nccl_api *api = NULL;
  if (nb_nccl_get(&api) != NB_OK) {
    printf("SKIPPED: %s\n", nb_last_error());
    nb_backend_free(gpu);
    return SKIP_CODE;
  }
  char v[32];
  nb_nccl_version_string(api->version, v, sizeof v);
  printf("NCCL %s (%s) on %s\n", v, api->path, nb_backend_name(gpu));
  nb_dist *d = NULL;
  if (nb_dist_init(NB_DIST_SELF, &d) != NB_OK) {
    printf("FAIL: %s\n", nb_last_error());
    nb_backend_free(gpu);
    return 1;
  }
  int code = check_buffers(gpu, d);
  if (code == 0) code = check_training(gpu, d);
  nb_dist_free(d);
  nb_backend_free(gpu);
  if (code == SKIP_CODE) return code;
  printf("%s\n", code ? "FAILED"
                      : "one-rank NCCL allreduce on cuda:0 matches (buffers and "
                        "mnist_cnn training)");
  return code;
}
