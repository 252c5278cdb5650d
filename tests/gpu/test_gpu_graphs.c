/* CUDA graphs (docs/cuda.md): a plan's 2nd run records its launches and
 * later runs replay the recording with one launch. This trains the MNIST
 * CNN (models/mnist_cnn.cfg, batch 64) with graphs switched off twice and
 * on once, from the same initial weights on the same batches, and checks:
 *   - with graphs on, the training and eval plans replay from their 2nd run
 *     (nb_plan_stats.graph), with them off never;
 *   - losses, eval logits and every variable afterwards equal the runs
 *     without graphs (bit for bit where the two runs without graphs agree
 *     with each other; else within 10x their own difference), while the
 *     learning rate changes every step (an input read on the device), a
 *     parameter is overwritten between runs (nb_state_write) and an eval
 *     plan runs between training steps on the same state;
 *   - a plan with dropout is recorded too and still draws a new mask every
 *     run (the run counter lives on the device and the recording advances
 *     it), the masks of the runs without graphs, also after
 *     nb_plan_set_step;
 *   - an MLP with dropout trained with Adam records, whole and in 4
 *     micro-batches (gradient accumulation: one graph per micro-batch
 *     instance, sharing one arena, and one for the update), with the
 *     losses of the runs without graphs;
 * and prints the ms per training step both ways. The reason a plan is not
 * recorded goes to stderr (NABLA_CUDA_VERBOSE=1 is set for the graphs-on
 * run).
 *
 * Exits 77 (skipped) without a GPU or a CUDA build. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_check.h"
#include "nabla/nabla.h"

#define STEPS      12
#define BATCH      64
#define EVAL_EVERY 4
#define N_EVAL     (STEPS / EVAL_EVERY)
#define TIMED      200
#define DROP_N     4096
#define DROP_RUNS  5
#define DROP_STEPS 6
#define MAX_VARS   64

/* What one training session produced. */
typedef struct {
  const char *label;
  float loss[STEPS];
  int train_graph[STEPS]; /* nb_plan_stats.graph after each step */
  float logits[N_EVAL][BATCH * 10];
  int eval_graph[N_EVAL];
  int n_vars;
  char *names[MAX_VARS];
  float *vars[MAX_VARS];
  int64_t numel[MAX_VARS];
  float drop[DROP_RUNS + 1][DROP_N]; /* the dropout plan's output: runs 0..DROP_RUNS-1,
                                        then run 1 again after nb_plan_set_step */
  int drop_graph;
  float mlp_loss[DROP_STEPS]; /* an MLP with dropout trained with Adam */
  int mlp_graph;
  float micro_loss[DROP_STEPS]; /* the same in 4 micro-batches (gradient accumulation) */
  int micro_graph;
  double ms_step, ms_run; /* per step with uploads; per run alone */
  int ok;                 /* the session ran to the end */
} session;

/* A learning rate that changes every step: replays must read the new one. */
static float lr_at(int step) { return 1e-3f * (1.0f + 0.25f * (float)(step % 4)); }

typedef struct {
  nb_graph *g;
  nb_plan *plan;
  nb_optimizer *opt;
  nb_tensor *x, *y, *out;
} net;

static nb_status build(const nb_model *m, int train, nb_backend *be, nb_state *st, net *n) {
  const nb_recipe *rec = nb_model_recipe(m);
  int64_t batch = BATCH;
  memset(n, 0, sizeof *n);
  n->g = nb_graph_new();
  n->x = nb_model_new_input(m, n->g, "x", batch);
  n->y = nb_input(n->g, "labels", NB_I64, 1, &batch);
  nb_nn nn = {.g = n->g, .training = train, .seed = rec->seed, .init = NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  nb_status rc = nb_model_build(m, &nn, n->x, &logits);
  if (rc) return rc;
  if (train) {
    n->out = nb_cross_entropy(n->g, logits, n->y, 0.0f);
    nb_tensor_set_output(n->out);
    rc = nb_recipe_update(rec, n->g, n->out, NULL, &n->opt);
  } else {
    n->out = logits;
    nb_tensor_set_output(n->out);
  }
  if (!rc) rc = nb_compile(n->g, be, st, NULL, &n->plan);
  return rc;
}

static void net_free(net *n) {
  nb_optimizer_free(n->opt);
  nb_plan_free(n->plan);
  nb_graph_free(n->g);
  memset(n, 0, sizeof *n);
}

static int graph_of(const nb_plan *p) { return nb_plan_get_stats(p).graph; }

/* Dropout then a sum (two launches): DROP_RUNS runs of the same input, then
 * nb_plan_set_step(p, 1) and one more run. */
static nb_status run_dropout(nb_backend *be, nb_state *st, session *s) {
  nb_graph *g = nb_graph_new();
  int64_t n = DROP_N;
  nb_tensor *x = nb_input(g, "x", NB_F32, 1, &n);
  nb_tensor *d = nb_dropout(g, x, 0.5f, 1234, 1);
  nb_tensor *total = nb_sum(g, d, 0, NULL, 0);
  nb_tensor_set_output(d);
  nb_tensor_set_output(total);
  nb_plan *p = NULL;
  nb_status rc = nb_compile(g, be, st, NULL, &p);
  float *host = malloc(DROP_N * sizeof *host);
  for (int i = 0; i < DROP_N; i++) host[i] = 1.0f + (float)(i % 7);
  for (int r = 0; r <= DROP_RUNS && !rc; r++) {
    if (r == DROP_RUNS) nb_plan_set_step(p, 1);
    rc = nb_plan_set_input(p, x, host, DROP_N * sizeof *host);
    if (!rc) rc = nb_plan_run(p);
    if (!rc) rc = nb_plan_get(p, d, s->drop[r], DROP_N * sizeof(float));
  }
  if (!rc) s->drop_graph = graph_of(p);
  free(host);
  nb_plan_free(p);
  nb_graph_free(g);
  return rc;
}

/* An MLP with dropout(0.5) between its layers trained DROP_STEPS Adam steps
 * on one synthetic batch: a whole training step with dropout, recorded
 * with graphs on, must give the losses of the runs without graphs. With
 * micro = 4 the step runs as 4 micro-batches of 8 (one graph per
 * micro-batch and one for the update). */
static nb_status train_dropout_mlp(nb_backend *be, nb_state *st, session *s, int micro) {
  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {32 / micro, 64}, ys[1] = {32 / micro}, w1s[2] = {64, 128}, w2s[2] = {128, 10};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs), *y = nb_input(g, "y", NB_I64, 1, ys);
  nb_tensor_set_micro(x, NB_MICRO_SPLIT);
  nb_tensor_set_micro(y, NB_MICRO_SPLIT);
  nb_init u = {NB_INIT_UNIFORM, -0.2f, 0.2f, 3};
  nb_tensor *w1 = nb_param(g, micro > 1 ? "micro_mlp.w1" : "drop_mlp.w1", 2, w1s, u);
  u.seed = 4;
  nb_tensor *w2 = nb_param(g, micro > 1 ? "micro_mlp.w2" : "drop_mlp.w2", 2, w2s, u);
  nb_tensor *h = nb_dropout(g, nb_relu(g, nb_matmul(g, x, w1)), 0.5f, 99, 1);
  nb_tensor *loss = nb_cross_entropy(g, nb_matmul(g, h, w2), y, 0.0f);
  nb_tensor_set_output(loss);
  nb_optimizer *opt = NULL;
  nb_plan *p = NULL;
  nb_status rc = nb_graph_backward(g, loss);
  if (!rc) rc = nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &opt);
  nb_compile_options o = nb_compile_defaults();
  o.micro_batches = micro;
  if (!rc) rc = nb_compile(g, be, st, &o, &p);
  float xv[32 * 64];
  int64_t yv[32];
  for (int i = 0; i < 32 * 64; i++) xv[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
  for (int i = 0; i < 32; i++) yv[i] = i % 10;
  if (!rc) rc = nb_plan_set_input(p, x, xv, sizeof xv);
  if (!rc) rc = nb_plan_set_input(p, y, yv, sizeof yv);
  for (int step = 1; step <= DROP_STEPS && !rc; step++) {
    rc = nb_optimizer_feed(opt, p, step, 1e-2f);
    if (!rc) rc = nb_plan_run(p);
    float *l = micro > 1 ? &s->micro_loss[step - 1] : &s->mlp_loss[step - 1];
    if (!rc) rc = nb_plan_get(p, loss, l, sizeof(float));
  }
  if (!rc) *(micro > 1 ? &s->micro_graph : &s->mlp_graph) = graph_of(p);
  nb_optimizer_free(opt);
  nb_plan_free(p);
  nb_graph_free(g);
  return rc;
}

/* One session on a fresh cuda:0 backend with NABLA_CUDA_GRAPHS=graphs. */
static void run_session(const nb_model *m, const char *graphs, session *s) {
  setenv("NABLA_CUDA_GRAPHS", graphs, 1);
  nb_backend *be = NULL;
  nb_state *st = NULL;
  net tr, ev;
  memset(&tr, 0, sizeof tr);
  memset(&ev, 0, sizeof ev);
  float *x = malloc((size_t)BATCH * 784 * sizeof *x);
  int64_t y[BATCH];
  nb_status rc = nb_backend_new("cuda:0", &be);
  if (!rc) rc = nb_state_new(be, &st);
  if (!rc) rc = build(m, 1, be, st, &tr);
  if (!rc) rc = build(m, 0, be, st, &ev);
  if (rc) printf("%s: building the plans: %s\n", s->label, nb_last_error());
  for (int step = 1; step <= STEPS && !rc; step++) {
    gpu_make_batch(step, BATCH, x, y);
    const char *what = "feeding the batch";
    rc = nb_plan_set_input(tr.plan, tr.x, x, (size_t)BATCH * 784 * sizeof *x);
    if (!rc) rc = nb_plan_set_input(tr.plan, tr.y, y, sizeof y);
    if (!rc) rc = nb_optimizer_feed(tr.opt, tr.plan, step, lr_at(step));
    if (!rc && step == STEPS / 2) {
      /* a host write into a variable the recording updates in place */
      const char *name;
      int nd;
      const int64_t *shape;
      what = "overwriting a variable";
      rc = nb_state_entry(st, 0, &name, NULL, &nd, &shape);
      int64_t numel = 1;
      for (int d = 0; d < nd; d++) numel *= shape[d];
      float *v = malloc((size_t)numel * sizeof *v);
      if (!rc) rc = nb_state_read(st, name, v, (size_t)numel * sizeof *v);
      for (int64_t i = 0; i < numel; i++) v[i] = 0.5f * v[i] + 0.01f * (float)(i % 3);
      if (!rc) rc = nb_state_write(st, name, v, (size_t)numel * sizeof *v);
      free(v);
    }
    if (!rc) {
      what = "running the training step";
      rc = nb_plan_run(tr.plan);
    }
    if (!rc) {
      what = "reading the loss";
      rc = nb_plan_get(tr.plan, tr.out, &s->loss[step - 1], sizeof(float));
    }
    s->train_graph[step - 1] = graph_of(tr.plan);
    if (!rc && step % EVAL_EVERY == 0) {
      int k = step / EVAL_EVERY - 1;
      what = "the eval plan";
      gpu_make_batch(100 + step, BATCH, x, y);
      rc = nb_plan_set_input(ev.plan, ev.x, x, (size_t)BATCH * 784 * sizeof *x);
      if (!rc) rc = nb_plan_run(ev.plan);
      if (!rc) rc = nb_plan_get(ev.plan, ev.out, s->logits[k], sizeof s->logits[k]);
      s->eval_graph[k] = graph_of(ev.plan);
    }
    if (rc) printf("%s: step %d, %s: %s\n", s->label, step, what, nb_last_error());
  }
  /* every variable after training: parameters and Adam's moments */
  s->n_vars = rc ? 0 : nb_state_count(st);
  if (s->n_vars > MAX_VARS) s->n_vars = MAX_VARS;
  for (int i = 0; i < s->n_vars && !rc; i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    rc = nb_state_entry(st, i, &name, NULL, &nd, &shape);
    s->numel[i] = 1;
    for (int d = 0; d < nd; d++) s->numel[i] *= shape[d];
    s->names[i] = strdup(name);
    s->vars[i] = malloc((size_t)s->numel[i] * sizeof(float));
    if (!rc) rc = nb_state_read(st, name, s->vars[i], (size_t)s->numel[i] * sizeof(float));
    if (rc) printf("%s: reading %s: %s\n", s->label, name, nb_last_error());
  }
  /* time: the whole step as a training loop makes it, then runs alone */
  if (!rc) {
    gpu_make_batch(1, BATCH, x, y);
    float loss;
    double t0 = now();
    for (int i = 0; i < TIMED && !rc; i++) {
      rc = nb_plan_set_input(tr.plan, tr.x, x, (size_t)BATCH * 784 * sizeof *x);
      if (!rc) rc = nb_plan_set_input(tr.plan, tr.y, y, sizeof y);
      if (!rc) rc = nb_optimizer_feed(tr.opt, tr.plan, STEPS + 1 + i, 1e-4f);
      if (!rc) rc = nb_plan_run(tr.plan);
    }
    if (!rc) rc = nb_plan_get(tr.plan, tr.out, &loss, sizeof loss); /* waits for the GPU */
    s->ms_step = 1e3 * (now() - t0) / TIMED;
    t0 = now();
    for (int i = 0; i < TIMED && !rc; i++) rc = nb_plan_run(tr.plan);
    if (!rc) rc = nb_plan_get(tr.plan, tr.out, &loss, sizeof loss);
    s->ms_run = 1e3 * (now() - t0) / TIMED;
    if (rc) printf("%s: timing: %s\n", s->label, nb_last_error());
  }
  if (!rc) {
    rc = run_dropout(be, st, s);
    if (rc) printf("%s: the dropout plan: %s\n", s->label, nb_last_error());
  }
  if (!rc) {
    rc = train_dropout_mlp(be, st, s, 1);
    if (rc) printf("%s: the MLP with dropout: %s\n", s->label, nb_last_error());
  }
  if (!rc) {
    rc = train_dropout_mlp(be, st, s, 4);
    if (rc) printf("%s: the MLP with dropout in micro-batches: %s\n", s->label, nb_last_error());
  }
  s->ok = !rc;
  free(x);
  net_free(&ev);
  net_free(&tr);
  nb_state_free(st);
  nb_backend_free(be);
}

static void session_free(session *s) {
  for (int i = 0; i < s->n_vars; i++) {
    free(s->names[i]);
    free(s->vars[i]);
  }
}

/* Largest |a - b| over the array, relative to the array's largest |a|. */
static double max_rel(const float *a, const float *b, int64_t n) {
  double d = 0, scale = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = fabs((double)a[i] - (double)b[i]);
    if (e > d || e != e) d = e;
    if (fabs((double)a[i]) > scale) scale = fabs((double)a[i]);
  }
  return scale > 0 ? d / scale : d;
}

/* The differences of session b from a: losses, eval logits, variables. */
typedef struct {
  double loss, logits, vars;
  const char *worst_var;
} diffs;

static diffs compare(const session *a, const session *b) {
  diffs d = {0, 0, 0, ""};
  d.loss = max_rel(a->loss, b->loss, STEPS);
  for (int k = 0; k < N_EVAL; k++) {
    double e = max_rel(a->logits[k], b->logits[k], BATCH * 10);
    if (e > d.logits) d.logits = e;
  }
  for (int i = 0; i < a->n_vars && i < b->n_vars; i++) {
    double e = strcmp(a->names[i], b->names[i]) || a->numel[i] != b->numel[i]
                   ? INFINITY
                   : max_rel(a->vars[i], b->vars[i], a->numel[i]);
    if (e > d.vars || e != e) {
      d.vars = e;
      d.worst_var = a->names[i];
    }
  }
  return d;
}

/* b may differ from a by rounding only as much as two runs without graphs
 * differ from each other (nondeterministic kernels); 1e-6 at least. */
static void expect_close(const char *what, double got, double noise) {
  double tol = noise > 0 ? 10 * noise + 1e-6 : 1e-6;
  EXPECT(got <= tol, "%s: graphs on vs off differ by %.3g (relative), allowed %.3g", what, got,
         tol);
}

int main(void) {
  nb_backend *probe = NULL;
  if (nb_backend_new("cuda:0", &probe) != NB_OK) {
    printf("SKIPPED: %s\n", nb_last_error());
    return SKIP_CODE;
  }
  nb_backend_free(probe);
  nb_model *m = NULL;
  if (nb_model_load(gpu_model_path("mnist_cnn.cfg"), &m)) {
    printf("FAIL: %s\n", nb_last_error());
    return 1;
  }
  static session S[3]; /* off, off again, on */
  S[0].label = "graphs off";
  S[1].label = "graphs off (2nd)";
  S[2].label = "graphs on";
  run_session(m, "0", &S[0]);
  run_session(m, "0", &S[1]);
  setenv("NABLA_CUDA_VERBOSE", "1", 1); /* prints why a plan is not recorded */
  printf("graphs on: NABLA_CUDA_VERBOSE=1 (stderr: cuDNN algorithms; why a plan is not "
         "recorded)\n");
  fflush(stdout);
  run_session(m, "1", &S[2]);
  unsetenv("NABLA_CUDA_VERBOSE");
  for (int k = 0; k < 3; k++) EXPECT(S[k].ok, "%s did not run to the end (see above)", S[k].label);
  if (!failures) {
    printf("%5s %14s %14s %6s %6s\n", "step", "loss (off)", "loss (on)", "graph", "(off)");
    for (int i = 0; i < STEPS; i++)
      printf("%5d %14.8f %14.8f %6d %6d\n", i + 1, S[0].loss[i], S[2].loss[i], S[2].train_graph[i],
             S[0].train_graph[i]);
    /* when plans replay: the 1st run sets up, the 2nd records */
    for (int i = 0; i < STEPS; i++) {
      /* off: NABLA_CUDA_GRAPHS=0 is found when the 2nd run would record */
      EXPECT(S[0].train_graph[i] == (i == 0 ? 0 : -1),
             "graphs off, after step %d: the training plan has graph = %d, want %d", i + 1,
             S[0].train_graph[i], i == 0 ? 0 : -1);
      int want = i == 0 ? 0 : 1;
      EXPECT(S[2].train_graph[i] == want,
             "graphs on, after step %d: the training plan has graph = %d, want %d (-1: not "
             "recorded; stderr says why)",
             i + 1, S[2].train_graph[i], want);
    }
    for (int k = 0; k < N_EVAL; k++) {
      int want = k == 0 ? 0 : 1;
      EXPECT(S[2].eval_graph[k] == want,
             "graphs on, eval run %d: the eval plan has graph = %d, want %d (-1: not recorded; "
             "stderr says why)",
             k + 1, S[2].eval_graph[k], want);
    }
    diffs noise = compare(&S[0], &S[1]), got = compare(&S[0], &S[2]);
    printf("largest relative difference   off vs off   off vs on\n");
    printf("  losses                       %10.3g  %10.3g\n", noise.loss, got.loss);
    printf("  eval logits                  %10.3g  %10.3g\n", noise.logits, got.logits);
    printf("  variables (%2d)               %10.3g  %10.3g  (worst: %s)\n", S[0].n_vars, noise.vars,
           got.vars, got.worst_var);
    EXPECT(S[0].n_vars > 0 && S[0].n_vars == S[2].n_vars, "%d variables off, %d on", S[0].n_vars,
           S[2].n_vars);
    expect_close("losses", got.loss, noise.loss);
    expect_close("eval logits", got.logits, noise.logits);
    expect_close("variables", got.vars, noise.vars);
    /* dropout: recorded, a new mask each run, the masks without graphs */
    int zeros = 0;
    for (int i = 0; i < DROP_N; i++) zeros += S[2].drop[0][i] == 0.0f;
    printf("dropout plan: graph = %d (want 1; %d without graphs), %d of %d zeroed in run 1\n",
           S[2].drop_graph, S[0].drop_graph, zeros, DROP_N);
    EXPECT(S[2].drop_graph == 1, "the dropout plan has graph = %d, want 1", S[2].drop_graph);
    EXPECT(zeros > DROP_N / 4 && zeros < 3 * DROP_N / 4, "dropout(0.5) zeroed %d of %d", zeros,
           DROP_N);
    for (int r = 1; r < DROP_RUNS; r++)
      EXPECT(memcmp(S[2].drop[r - 1], S[2].drop[r], sizeof S[2].drop[0]),
             "dropout drew the same mask in runs %d and %d", r - 1, r);
    EXPECT(!memcmp(S[2].drop[DROP_RUNS], S[2].drop[1], sizeof S[2].drop[0]),
           "after nb_plan_set_step(1) dropout drew another mask than run 1's");
    EXPECT(!memcmp(S[0].drop, S[2].drop, sizeof S[0].drop),
           "dropout masks differ between graphs on and off");
    /* a training step with dropout, recorded */
    double mlp_noise = max_rel(S[0].mlp_loss, S[1].mlp_loss, DROP_STEPS);
    double mlp_got = max_rel(S[0].mlp_loss, S[2].mlp_loss, DROP_STEPS);
    printf("MLP with dropout, %d Adam steps: graph = %d (want 1), losses %.5f .. %.5f, "
           "off vs off %.3g, off vs on %.3g\n",
           DROP_STEPS, S[2].mlp_graph, (double)S[2].mlp_loss[0],
           (double)S[2].mlp_loss[DROP_STEPS - 1], mlp_noise, mlp_got);
    EXPECT(S[2].mlp_graph == 1, "the MLP with dropout has graph = %d, want 1", S[2].mlp_graph);
    expect_close("MLP-with-dropout losses", mlp_got, mlp_noise);
    /* gradient accumulation: each micro-batch instance and the update recorded */
    double micro_noise = max_rel(S[0].micro_loss, S[1].micro_loss, DROP_STEPS);
    double micro_got = max_rel(S[0].micro_loss, S[2].micro_loss, DROP_STEPS);
    printf("the same in 4 micro-batches: graph = %d (want 1), losses %.5f .. %.5f, off vs off "
           "%.3g, off vs on %.3g\n",
           S[2].micro_graph, (double)S[2].micro_loss[0], (double)S[2].micro_loss[DROP_STEPS - 1],
           micro_noise, micro_got);
    EXPECT(S[2].micro_graph == 1, "the micro-batched MLP has graph = %d, want 1", S[2].micro_graph);
    expect_close("micro-batched MLP losses", micro_got, micro_noise);
  }
  if (S[0].ok && S[2].ok) {
    printf("ms per training step (batch %d, %d steps; set inputs + lr, run):  off %.3f  on %.3f  "
           "(%.2fx)\n",
           BATCH, TIMED, S[0].ms_step, S[2].ms_step,
           S[2].ms_step > 0 ? S[0].ms_step / S[2].ms_step : 0.0);
    printf("ms per run alone:                                               off %.3f  on %.3f  "
           "(%.2fx)\n",
           S[0].ms_run, S[2].ms_run, S[2].ms_run > 0 ? S[0].ms_run / S[2].ms_run : 0.0);
  }
  for (int k = 0; k < 3; k++) session_free(&S[k]);
  nb_model_free(m);
  if (failures) {
    printf("FAILED (%d checks)\n", failures);
    return 1;
  }
  printf("cuda graphs: mnist_cnn trains alike with and without, %.3f vs %.3f ms/step\n",
         S[2].ms_step, S[0].ms_step);
  return 0;
}
