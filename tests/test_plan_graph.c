/* plan.c's use of a backend's graph hooks (recorded runs, CUDA graphs on a
 * GPU), on the CPU: a mock backend wraps the CPU backend with hooks that
 * record each launch (a copy of its nb_kernel_call, frozen like a CUDA graph
 * freezes kernel arguments) instead of running it, and replay the copies
 * through the CPU kernels. Against the plain CPU backend, bit for bit:
 *   - an MLP trained with Adam (a new learning rate every step, a variable
 *     overwritten between runs, a second plan on the same state) runs its
 *     1st step plainly, records at the 2nd and replays afterwards;
 *   - a recording that fails at a launch or at its end is dropped, the run
 *     still happens (launched one by one) and the plan never records again;
 *   - a plan with dropout records too: the mask hashes the run counter,
 *     which lives in the backend's memory and which the recording's last
 *     call (count) advances, so each replay draws the mask of its run, also
 *     after nb_plan_set_step; on a backend without `count` it never records;
 *   - switched off (graph_begin refuses) or with fewer than two launches, a
 *     plan never records;
 *   - nb_plan_free drops the recording. */
#include <stdlib.h>
#include <string.h>

#include "../src/backend/backend_internal.h"
#include "test_util.h"

#define BATCH 8
#define IN    12
#define HID   16
#define OUT   5
#define STEPS 7

/* ---- the mock backend ---------------------------------------------------------- */

typedef struct rec_call {
  nb_kernel_call call;
  void **in;       /* the call's input pointers, copied */
  uint64_t *count; /* a recorded `count` (call unused), else NULL */
} rec_call;

typedef struct recording {
  int n, cap;
  rec_call *calls;
} recording;

static struct {
  const nb_backend_vtable *cpu;
  recording *open; /* being recorded */
  int refuse;      /* graph_begin answers NB_ERR_UNSUPPORTED */
  int fail_launch; /* recording fails at this launch (1-based), 0 = never */
  int failed;      /* a launch failed while recording: so does graph_end */
  int fail_end;    /* graph_end fails */
  int begins, ends, launches, drops, live;
} mock;

static nb_backend_vtable mock_vt;

static void recording_free(recording *r) {
  for (int i = 0; r && i < r->n; i++) free(r->calls[i].in);
  if (r) free(r->calls);
  free(r);
}

static rec_call *record_new(recording *r) {
  if (r->n == r->cap) {
    r->cap = r->cap ? 2 * r->cap : 16;
    r->calls = realloc(r->calls, (size_t)r->cap * sizeof *r->calls);
    assert_non_null(r->calls);
  }
  rec_call *k = &r->calls[r->n++];
  memset(k, 0, sizeof *k);
  return k;
}

static nb_status mock_count(nb_backend *be, uint64_t *counter) {
  if (!mock.open) return mock.cpu->count(be, counter);
  record_new(mock.open)->count = counter;
  return NB_OK;
}

static nb_status mock_run(nb_backend *be, const nb_kernel_call *c) {
  if (!mock.open) return mock.cpu->run(be, c);
  recording *r = mock.open;
  if (mock.fail_launch && r->n + 1 == mock.fail_launch) {
    mock.failed = 1; /* like an invalidated stream capture */
    return nb_error(NB_ERR_UNSUPPORTED, "mock: launch %d cannot be recorded", r->n + 1);
  }
  rec_call *k = record_new(r);
  k->call = *c;
  k->in = malloc((size_t)(c->n_in ? c->n_in : 1) * sizeof *k->in);
  assert_non_null(k->in);
  for (int i = 0; i < c->n_in; i++) k->in[i] = c->in[i];
  k->call.in = k->in;
  return NB_OK;
}

static nb_status mock_begin(nb_backend *be) {
  (void)be;
  if (mock.refuse) return nb_error(NB_ERR_UNSUPPORTED, "mock: recording is switched off");
  assert_null(mock.open);
  mock.begins++;
  mock.open = calloc(1, sizeof *mock.open);
  assert_non_null(mock.open);
  return NB_OK;
}

static nb_status mock_end(nb_backend *be, void **out) {
  (void)be;
  recording *r = mock.open;
  mock.open = NULL;
  mock.ends++;
  *out = NULL;
  if (mock.fail_end || mock.failed) {
    mock.failed = 0;
    recording_free(r);
    return nb_error(NB_ERR_INTERNAL, "mock: the recording failed");
  }
  mock.live++;
  *out = r;
  return NB_OK;
}

static nb_status mock_launch(nb_backend *be, void *graph) {
  const recording *r = graph;
  mock.launches++;
  for (int i = 0; i < r->n; i++) {
    const rec_call *k = &r->calls[i];
    nb_status st = k->count ? mock.cpu->count(be, k->count) : mock.cpu->run(be, &k->call);
    if (st) return st;
  }
  return NB_OK;
}

static void mock_drop(nb_backend *be, void *graph) {
  (void)be;
  mock.drops++;
  mock.live--;
  recording_free(graph);
}

/* A CPU backend whose table has the graph hooks. */
static nb_backend *mock_backend(void) {
  nb_backend *be = NULL;
  TU_OK(nb_backend_new("cpu", &be));
  memset(&mock, 0, sizeof mock);
  mock.cpu = be->vt;
  mock_vt = *be->vt;
  mock_vt.run = mock_run;
  mock_vt.graph_begin = mock_begin;
  mock_vt.graph_end = mock_end;
  mock_vt.graph_launch = mock_launch;
  mock_vt.graph_drop = mock_drop;
  mock_vt.count = mock_count;
  be->vt = &mock_vt;
  return be;
}

/* ---- an MLP training step -------------------------------------------------------- */

typedef struct mlp {
  nb_backend *be;
  nb_state *st;
  nb_graph *g, *ge;
  nb_plan *p, *pe;
  nb_optimizer *opt;
  nb_tensor *x, *y, *loss, *ex, *eout;
} mlp;

static nb_tensor *forward(nb_graph *g, nb_tensor *x) {
  int64_t w1s[2] = {IN, HID}, b1s[1] = {HID}, w2s[2] = {HID, OUT};
  nb_init u = {NB_INIT_UNIFORM, -0.4f, 0.4f, 11};
  nb_tensor *w1 = nb_param(g, "w1", 2, w1s, u);
  u.seed = 12;
  nb_tensor *b1 = nb_param(g, "b1", 1, b1s, u);
  u.seed = 13;
  nb_tensor *w2 = nb_param(g, "w2", 2, w2s, u);
  return nb_matmul(g, nb_relu(g, nb_add(g, nb_matmul(g, x, w1), b1)), w2);
}

/* The training step in `micro` micro-batches of BATCH / micro (1: none). */
static void mlp_build_micro(mlp *m, nb_backend *be, int micro) {
  memset(m, 0, sizeof *m);
  m->be = be;
  TU_OK(nb_state_new(be, &m->st));
  int64_t xs[2] = {BATCH, IN}, ys[1] = {BATCH / micro}, ms[2] = {BATCH / micro, IN};
  m->g = nb_graph_new();
  m->x = nb_input(m->g, "x", NB_F32, 2, ms);
  m->y = nb_input(m->g, "y", NB_I64, 1, ys);
  nb_tensor_set_micro(m->x, NB_MICRO_SPLIT);
  nb_tensor_set_micro(m->y, NB_MICRO_SPLIT);
  m->loss = nb_cross_entropy(m->g, forward(m->g, m->x), m->y, 0.0f);
  nb_tensor_set_output(m->loss);
  TU_OK(nb_graph_backward(m->g, m->loss));
  TU_OK(nb_optimizer_adam(m->g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &m->opt));
  nb_compile_options o = nb_compile_defaults();
  o.micro_batches = micro;
  TU_OK(nb_compile(m->g, be, m->st, &o, &m->p));
  /* an eval plan on the same state */
  m->ge = nb_graph_new();
  m->ex = nb_input(m->ge, "x", NB_F32, 2, xs);
  m->eout = forward(m->ge, m->ex);
  nb_tensor_set_output(m->eout);
  TU_OK(nb_compile(m->ge, be, m->st, NULL, &m->pe));
}

static void mlp_build(mlp *m, nb_backend *be) { mlp_build_micro(m, be, 1); }

static void mlp_free(mlp *m) {
  nb_optimizer_free(m->opt);
  nb_plan_free(m->p);
  nb_plan_free(m->pe);
  nb_graph_free(m->g);
  nb_graph_free(m->ge);
  nb_state_free(m->st);
  nb_backend_free(m->be);
}

typedef struct trace {
  float loss[STEPS];
  float eval[STEPS][BATCH * OUT];
  int graph[STEPS]; /* nb_plan_stats.graph of the training plan after each step */
  tu_snapshot snap;
} trace;

/* STEPS training steps with a new batch and learning rate each, an eval
 * run after each, and a host write into w2 before step 4. */
static void train(mlp *m, trace *t) {
  float *x = tu_rand(BATCH * IN, -1.0f, 1.0f, 5);
  int64_t y[BATCH];
  for (int s = 1; s <= STEPS; s++) {
    for (int i = 0; i < BATCH * IN; i++) x[i] = x[i] * 0.9f + 0.01f * (float)s;
    for (int i = 0; i < BATCH; i++) y[i] = (i + s) % OUT;
    TU_OK(nb_plan_set_input(m->p, m->x, x, sizeof(float) * BATCH * IN));
    TU_OK(nb_plan_set_input(m->p, m->y, y, sizeof y));
    TU_OK(nb_optimizer_feed(m->opt, m->p, s, 0.01f * (float)(1 + s % 3)));
    if (s == 4) {
      float w2[HID * OUT];
      TU_OK(nb_state_read(m->st, "w2", w2, sizeof w2));
      for (int i = 0; i < HID * OUT; i++) w2[i] = -0.5f * w2[i];
      TU_OK(nb_state_write(m->st, "w2", w2, sizeof w2));
    }
    TU_OK(nb_plan_run(m->p));
    TU_OK(nb_plan_get(m->p, m->loss, &t->loss[s - 1], sizeof(float)));
    t->graph[s - 1] = nb_plan_get_stats(m->p).graph;
    TU_OK(nb_plan_set_input(m->pe, m->ex, x, sizeof(float) * BATCH * IN));
    TU_OK(nb_plan_run(m->pe));
    TU_OK(nb_plan_get(m->pe, m->eout, t->eval[s - 1], sizeof t->eval[s - 1]));
  }
  tu_snapshot_take(m->st, &t->snap);
  free(x);
}

/* The plain CPU backend's trace, the reference for every mock run. */
static trace ref;
static int ref_done;

static const trace *reference(void) {
  if (!ref_done) {
    mlp m;
    nb_backend *be = NULL;
    TU_OK(nb_backend_new("cpu", &be));
    mlp_build(&m, be);
    train(&m, &ref);
    for (int s = 0; s < STEPS; s++) assert_int_equal(ref.graph[s], -1); /* no hooks */
    mlp_free(&m);
    ref_done = 1;
  }
  return &ref;
}

static void assert_same(const trace *a, const trace *b) {
  assert_memory_equal(a->loss, b->loss, sizeof a->loss);
  assert_memory_equal(a->eval, b->eval, sizeof a->eval);
  tu_snapshot_assert_equal(&a->snap, &b->snap, "after training");
}

static void test_records_at_second_run(void **state) {
  (void)state;
  const trace *ref = reference();
  mlp m;
  mlp_build(&m, mock_backend());
  trace t;
  train(&m, &t);
  assert_same(ref, &t);
  /* training plan: plain, recorded, then replays; the eval plan likewise */
  assert_int_equal(t.graph[0], 0);
  for (int s = 1; s < STEPS; s++) assert_int_equal(t.graph[s], 1);
  assert_int_equal(nb_plan_get_stats(m.pe).graph, 1);
  assert_int_equal(mock.begins, 2);
  assert_int_equal(mock.ends, 2);
  assert_int_equal(mock.launches, 2 * (STEPS - 1)); /* the recording run replays too */
  assert_int_equal(mock.live, 2);
  nb_plan_free(m.p);
  m.p = NULL;
  assert_int_equal(mock.drops, 1);
  mlp_free(&m);
  assert_int_equal(mock.live, 0);
  tu_snapshot_free(&t.snap);
}

static void check_never_records(int refuse, int fail_launch, int fail_end, int begins) {
  const trace *ref = reference();
  mlp m;
  nb_backend *be = mock_backend();
  mock.refuse = refuse;
  mock.fail_launch = fail_launch;
  mock.fail_end = fail_end;
  mlp_build(&m, be);
  trace t;
  train(&m, &t);
  assert_same(ref, &t);
  assert_int_equal(t.graph[0], 0);
  for (int s = 1; s < STEPS; s++) assert_int_equal(t.graph[s], -1);
  assert_int_equal(mock.begins, begins); /* one try per plan, never again */
  assert_int_equal(mock.launches, 0);
  assert_int_equal(mock.live, 0);
  assert_null(mock.open);
  mlp_free(&m);
  tu_snapshot_free(&t.snap);
}

static void test_failed_recording_falls_back(void **state) {
  (void)state;
  check_never_records(0, 2, 0, 2); /* a launch cannot be recorded */
  check_never_records(0, 0, 1, 2); /* the recording cannot be finished */
  check_never_records(1, 0, 0, 0); /* switched off */
}

/* RUNS runs of dropout(x) + its sum on backend be: the masks of runs
 * 0..RUNS-1, then of the run after nb_plan_set_step(p, AGAIN) (the mask of
 * run AGAIN once more). *graph: nb_plan_stats.graph at the end. */
#define RUNS  5
#define AGAIN 2
static void dropout_runs(nb_backend *be, float out[RUNS + 1][256], int *graph) {
  nb_state *st = NULL;
  TU_OK(nb_state_new(be, &st));
  nb_graph *g = nb_graph_new();
  int64_t n = 256;
  nb_tensor *x = nb_input(g, "x", NB_F32, 1, &n);
  nb_tensor *d = nb_dropout(g, x, 0.5f, 99, 1);
  nb_tensor_set_output(d);
  nb_tensor_set_output(nb_sum(g, d, 0, NULL, 0)); /* a second launch */
  nb_plan *p = NULL;
  TU_OK(nb_compile(g, be, st, NULL, &p));
  float *in = tu_rand(256, 1.0f, 2.0f, 3);
  TU_OK(nb_plan_set_input(p, x, in, 256 * sizeof(float)));
  for (int r = 0; r <= RUNS; r++) {
    if (r == RUNS) nb_plan_set_step(p, AGAIN);
    TU_OK(nb_plan_run(p));
    TU_OK(nb_plan_get(p, d, out[r], sizeof out[r]));
  }
  assert_int_equal(nb_plan_step(p), AGAIN + 1);
  *graph = nb_plan_get_stats(p).graph;
  free(in);
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
}

static void test_dropout_records(void **state) {
  (void)state;
  static float plain[RUNS + 1][256], rec[RUNS + 1][256], bare[RUNS + 1][256];
  int graph = 0;
  nb_backend *be = NULL;
  TU_OK(nb_backend_new("cpu", &be));
  dropout_runs(be, plain, &graph);
  assert_int_equal(graph, -1);
  for (int r = 1; r < RUNS; r++) /* a new mask each run */
    assert_memory_not_equal(plain[r - 1], plain[r], sizeof plain[r]);
  assert_memory_equal(plain[RUNS], plain[AGAIN], sizeof plain[RUNS]);

  /* recorded at run 1, replayed from run 2 on, recording again after nothing */
  dropout_runs(mock_backend(), rec, &graph);
  assert_int_equal(graph, 1);
  assert_int_equal(mock.begins, 1);
  assert_int_equal(mock.launches, RUNS); /* runs 1 .. RUNS-1 and the one after set_step */
  assert_memory_equal(plain, rec, sizeof plain);

  /* a backend without `count` gives kernels the counter by value: never recorded */
  be = mock_backend();
  mock_vt.count = NULL;
  dropout_runs(be, bare, &graph);
  assert_int_equal(graph, -1);
  assert_int_equal(mock.begins, 0);
  assert_memory_equal(plain, bare, sizeof plain);
}

/* Gradient accumulation on one device: every micro-batch instance of the
 * step (which share one arena) and the update record and replay, and the
 * run is the plain CPU backend's bit for bit. */
static void test_micro_batches_record(void **state) {
  (void)state;
  trace plain, rec;
  mlp m;
  nb_backend *be = NULL;
  TU_OK(nb_backend_new("cpu", &be));
  mlp_build_micro(&m, be, 4);
  train(&m, &plain);
  mlp_free(&m);
  for (int s = 0; s < STEPS; s++) assert_int_equal(plain.graph[s], -1); /* no hooks */
  mlp_build_micro(&m, mock_backend(), 4);
  train(&m, &rec);
  assert_same(&plain, &rec);
  assert_int_equal(rec.graph[0], 0);
  for (int s = 1; s < STEPS; s++) assert_int_equal(rec.graph[s], 1);
  /* 4 micro-batch instances, the update and the eval plan at least */
  assert_true(mock.begins >= 6);
  assert_int_equal(mock.begins, mock.ends);
  mlp_free(&m);
  assert_int_equal(mock.live, 0);
  tu_snapshot_free(&plain.snap);
  tu_snapshot_free(&rec.snap);
}

static void test_single_launch_never_records(void **state) {
  (void)state;
  nb_backend *be = mock_backend();
  nb_state *st = NULL;
  TU_OK(nb_state_new(be, &st));
  nb_graph *g = nb_graph_new();
  int64_t n = 4;
  nb_tensor *x = nb_input(g, "x", NB_F32, 1, &n);
  nb_tensor *y = nb_relu(g, x);
  nb_tensor_set_output(y);
  nb_plan *p = NULL;
  TU_OK(nb_compile(g, be, st, NULL, &p));
  float in[4] = {-1, 2, -3, 4}, out[4], want[4] = {0, 2, 0, 4};
  TU_OK(nb_plan_set_input(p, x, in, sizeof in));
  for (int r = 0; r < 3; r++) TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, y, out, sizeof out));
  assert_memory_equal(out, want, sizeof out);
  assert_int_equal(nb_plan_get_stats(p).graph, -1);
  assert_int_equal(mock.begins, 0);
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_records_at_second_run),
      cmocka_unit_test(test_failed_recording_falls_back),
      cmocka_unit_test(test_dropout_records),
      cmocka_unit_test(test_micro_batches_record),
      cmocka_unit_test(test_single_launch_never_records),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (ref_done) tu_snapshot_free(&ref.snap);
  return rc;
}
