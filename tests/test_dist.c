/* Data-parallel pieces that one process can check (the multi-process runs
 * are tests/dist/dist_mpi.sh): the single-process communicator, the
 * gradient allreduce ops and their schedule (starts right after their
 * gradients, waits right before their readers), bucketing, the sharded
 * loader, and summed confusion counts. */
#include <stdlib.h>
#include <string.h>

#include "../src/compile/compile_internal.h"
#include "../src/dist/dist_internal.h"
#include "test_util.h"

static nb_dist *single(void) {
  nb_dist *d = NULL;
  TU_OK(nb_dist_init(NB_DIST_SINGLE, &d));
  return d;
}

static void test_single_communicator(void **state) {
  (void)state;
  nb_dist *d = single();
  assert_int_equal(nb_dist_rank(d), 0);
  assert_int_equal(nb_dist_size(d), 1);
  assert_string_equal(nb_dist_kind(d), "single");
  float f[3] = {1.5f, -2.0f, 3.25f};
  int64_t i[2] = {7, -9};
  TU_OK(nb_dist_allreduce(d, f, 3, NB_F32, NB_DIST_SUM));
  TU_OK(nb_dist_allreduce(d, i, 2, NB_I64, NB_DIST_MAX));
  assert_true(f[0] == 1.5f && f[1] == -2.0f && f[2] == 3.25f);
  assert_true(i[0] == 7 && i[1] == -9);
  TU_OK(nb_dist_broadcast(d, f, sizeof f, 0));
  assert_int_equal(nb_dist_broadcast(d, f, sizeof f, 1), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_dist_allreduce(d, f, 3, NB_F16, NB_DIST_SUM), NB_ERR_DTYPE);
  TU_OK(nb_dist_barrier(d));
  const char *names[1] = {"x"};
  int64_t v[1] = {5};
  TU_OK(nb_dist_check_same(d, 1, names, v));
  /* agree passes a status through unchanged with one rank */
  assert_int_equal(nb_dist_agree(d, NB_ERR_IO), NB_ERR_IO);
  assert_int_equal(nb_dist_agree(d, NB_OK), NB_OK);
  /* one pending reduction per buffer, waited for by buffer */
  TU_OK(nb_dist_iallreduce_start(d, f, 3));
  assert_int_equal(nb_dist_pending(d), 1);
  assert_int_equal(nb_dist_iallreduce_start(d, f, 3), NB_ERR_STATE);
  nb_dist_progress(d);
  TU_OK(nb_dist_iallreduce_wait(d, f));
  assert_int_equal(nb_dist_pending(d), 0);
  assert_int_equal(nb_dist_iallreduce_wait(d, f), NB_ERR_STATE);
  assert_true(f[0] == 1.5f);
  /* drain completes every pending reduction (a run that failed between a
   * start and its wait), after which the buffers can be started again */
  float g[2] = {4.0f, 5.0f};
  const nb_collective *c = nb_dist_collective(d);
  TU_OK(c->iallreduce_start(c->ctx, f, 3));
  TU_OK(c->iallreduce_start(c->ctx, g, 2));
  assert_int_equal(c->pending(c->ctx), 2);
  TU_OK(c->drain(c->ctx));
  assert_int_equal(nb_dist_pending(d), 0);
  TU_OK(nb_dist_iallreduce_start(d, f, 3));
  TU_OK(nb_dist_drain(d));
  assert_int_equal(nb_dist_pending(d), 0);
  assert_true(f[0] == 1.5f && g[1] == 5.0f);
  nb_dist_free(d);
  /* NULL stands for one process */
  assert_int_equal(nb_dist_size(NULL), 1);
  assert_int_equal(nb_dist_rank(NULL), 0);
}

static void test_mpi_needs_a_launcher(void **state) {
  (void)state;
  if (nb_dist_launched()) skip(); /* run by hand under mpirun */
  nb_dist *d = NULL;
  nb_status st = nb_dist_init(NB_DIST_MPI, &d);
  assert_true(st != NB_OK);
  assert_null(d);
  /* either "needs an MPI launcher: run it as `mpirun ...`" or "built without" */
  assert_non_null(strstr(nb_last_error(), nb_dist_mpi_built() ? "mpirun" : "without"));
  /* AUTO without a launcher is one process */
  TU_OK(nb_dist_init(NB_DIST_AUTO, &d));
  assert_int_equal(nb_dist_size(d), 1);
  nb_dist_free(d);
}

/* allreduce_mean with one rank hands back its inputs, strided ones too */
static void test_allreduce_mean_values(void **state) {
  (void)state;
  nb_dist *d = single();
  nb_backend *be = NULL;
  nb_state *st = NULL;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_graph *g = nb_graph_new();
  int64_t sa[2] = {3, 4}, sb[1] = {5};
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, sa), *b = nb_input(g, "b", NB_F32, 1, sb);
  nb_tensor *xs[2] = {nb_transpose(g, a, 0, 1), nb_mul(g, b, nb_scalar(g, 2.0f))}, *outs[2];
  TU_OK(nb_allreduce_mean(g, d, 2, xs, outs));
  assert_int_equal(nb_tensor_ndim(outs[0]), 2);
  assert_int_equal(nb_tensor_shape(outs[0])[0], 4);
  nb_tensor *y0 = nb_add(g, outs[0], nb_scalar(g, 0.0f)),
            *y1 = nb_add(g, outs[1], nb_scalar(g, 0.0f));
  nb_tensor_set_output(y0);
  nb_tensor_set_output(y1);
  nb_plan *p = NULL;
  TU_OK(nb_compile(g, be, st, NULL, &p));
  float av[12], bv[5], got0[12], got1[5], want0[12], want1[5];
  for (int i = 0; i < 12; i++) av[i] = (float)i * 0.5f - 2.0f;
  for (int i = 0; i < 5; i++) bv[i] = (float)(i * i) - 3.0f;
  for (int r = 0; r < 3; r++)
    for (int c = 0; c < 4; c++) want0[c * 3 + r] = av[r * 4 + c];
  for (int i = 0; i < 5; i++) want1[i] = 2.0f * bv[i];
  for (int run = 0; run < 2; run++) { /* a second run reuses the buffers */
    TU_OK(nb_plan_set_input(p, a, av, sizeof av));
    TU_OK(nb_plan_set_input(p, b, bv, sizeof bv));
    TU_OK(nb_plan_run(p));
    TU_OK(nb_plan_get(p, y0, got0, sizeof got0));
    TU_OK(nb_plan_get(p, y1, got1, sizeof got1));
    tu_assert_close("transposed", got0, want0, 12, 0, 0);
    tu_assert_close("scaled", got1, want1, 5, 0, 0);
  }
  assert_int_equal(nb_dist_pending(d), 0);
  /* non-f32 is refused with the op's name */
  nb_graph *g2 = nb_graph_new();
  nb_tensor *ii = nb_input(g2, "i", NB_I64, 1, sb), *o = NULL;
  assert_int_equal(nb_allreduce_mean(g2, d, 1, &ii, &o), NB_ERR_DTYPE);
  assert_non_null(strstr(nb_graph_error(g2), "allreduce_start"));
  nb_graph_free(g2);
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
  nb_dist_free(d);
}

/* A two-layer MLP's SGD step, optionally with averaged gradients. */
typedef struct {
  nb_graph *g;
  nb_tensor *x, *y, *loss;
  nb_optimizer *opt;
  nb_plan *plan;
  int buckets;
} mlp;

static void mlp_build(mlp *m, nb_dist *d, size_t bucket_bytes, nb_backend *be, nb_state *st) {
  memset(m, 0, sizeof *m);
  m->g = nb_graph_new();
  int64_t xs[2] = {6, 8}, ys[1] = {6};
  m->x = nb_input(m->g, "x", NB_F32, 2, xs);
  m->y = nb_input(m->g, "y", NB_I64, 1, ys);
  nb_nn nn = {.g = m->g, .training = 1, .seed = 3, .init = NB_NN_INIT_TORCH};
  nb_tensor *h = nb_relu(m->g, nb_nn_linear(&nn, "fc1", m->x, 16, 1));
  m->loss = nb_cross_entropy(m->g, nb_nn_linear(&nn, "fc2", h, 3, 1), m->y, 0.0f);
  nb_tensor_set_output(m->loss);
  TU_OK(nb_graph_backward(m->g, m->loss));
  if (d) TU_OK(nb_dist_average_grads(m->g, d, bucket_bytes, &m->buckets));
  TU_OK(nb_clip_grad_norm(m->g, 0.5f, NULL));
  TU_OK(nb_optimizer_sgd(m->g, 0.9f, 0.01f, 0, &m->opt));
  TU_OK(nb_compile(m->g, be, st, NULL, &m->plan));
}

static void mlp_free(mlp *m) {
  nb_plan_free(m->plan);
  nb_optimizer_free(m->opt);
  nb_graph_free(m->g);
}

/* Trains 4 steps and returns fc1.weight and fc2.bias (16*8 + 3 floats). */
static void mlp_train(nb_dist *d, size_t bucket_bytes, int *buckets, float *w) {
  nb_backend *be = NULL;
  nb_state *st = NULL;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  mlp m;
  mlp_build(&m, d, bucket_bytes, be, st);
  float *x = tu_rand(48, -1, 1, 11);
  int64_t y[6] = {0, 1, 2, 2, 1, 0};
  for (int step = 1; step <= 4; step++) {
    x[step] += 0.25f;
    TU_OK(nb_plan_set_input(m.plan, m.x, x, 48 * sizeof(float)));
    TU_OK(nb_plan_set_input(m.plan, m.y, y, sizeof y));
    TU_OK(nb_optimizer_feed(m.opt, m.plan, step, 0.1f));
    TU_OK(nb_plan_run(m.plan));
  }
  TU_OK(nb_state_read(st, "fc1.weight", w, 128 * sizeof(float)));
  TU_OK(nb_state_read(st, "fc2.bias", w + 128, 3 * sizeof(float)));
  if (buckets) *buckets = m.buckets;
  free(x);
  mlp_free(&m);
  nb_state_free(st);
  nb_backend_free(be);
}

/* Averaging over one rank changes no bit of training, whatever the
 * buckets; gradients are bucketed in the order backward finishes them. */
static void test_average_grads_buckets(void **state) {
  (void)state;
  nb_dist *d = single();
  float want[131], got[131];
  mlp_train(NULL, 0, NULL, want);
  /* bytes: fc2.weight 192 + fc2.bias 12 finish first, then fc1.weight 512
   * + fc1.bias 64 */
  const size_t caps[3] = {1, 600, 1 << 20};
  const int expect[3] = {4, 2, 1};
  for (int k = 0; k < 3; k++) {
    int buckets = 0;
    mlp_train(d, caps[k], &buckets, got);
    assert_int_equal(buckets, expect[k]);
    tu_assert_close("weights", got, want, 131, 0, 0);
  }
  nb_dist_free(d);
}

/* index of the launch writing node t's storage, -1 if none */
static int step_of(const nb_plan *p, const nb_tensor *t) {
  return p->info[nb_storage_of(t)->id].step;
}

static int reads(const nb_launch *l, const nb_tensor *t) {
  for (int k = 0; k < l->n_ins; k++)
    if (nb_storage_of(l->ins[k]) == t) return 1;
  return 0;
}

/* A start runs right after the launches that produce its gradients (so
 * before the rest of backward), a wait right before its first reader. */
static void test_schedule_overlaps(void **state) {
  (void)state;
  nb_dist *d = single();
  nb_backend *be = NULL;
  nb_state *st = NULL;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  mlp m;
  mlp_build(&m, d, 1, be, st); /* a bucket per gradient */
  const nb_plan *p = m.plan;
  int starts = 0, last_grad = -1, first_start = p->n_launch;
  for (int s = 0; s < p->n_launch; s++) {
    const nb_launch *l = &p->launch[s];
    if (l->node->op == NB_OP_ALLREDUCE_START) {
      starts++;
      if (s < first_start) first_start = s;
      int latest = -1;
      for (int k = 0; k < l->n_ins; k++) {
        int ps = step_of(p, l->ins[k]);
        assert_true(ps < s);
        if (ps > latest) latest = ps;
      }
      if (latest > last_grad) last_grad = latest;
      /* nothing but other starts between its inputs and itself */
      for (int j = latest + 1; j < s; j++)
        assert_int_equal(p->launch[j].node->op, NB_OP_ALLREDUCE_START);
    }
    if (l->node->op == NB_OP_ALLREDUCE_WAIT) {
      int j = s + 1;
      while (j < p->n_launch && p->launch[j].node->op == NB_OP_ALLREDUCE_WAIT &&
             !reads(&p->launch[j], l->node))
        j++;
      assert_true(j < p->n_launch);
      assert_true(reads(&p->launch[j], l->node));
    }
  }
  assert_int_equal(starts, 4);
  /* the first bucket's reduction starts while backward still computes
   * later gradients: that is the overlap */
  assert_true(first_start < last_grad);
  mlp_free(&m);
  nb_state_free(st);
  nb_backend_free(be);
  nb_dist_free(d);
}

/* Shards of every batch, side by side, are the whole batch (augmented the
 * same way), epoch after epoch. */
static void test_loader_shards(void **state) {
  (void)state;
  nb_dataset ds;
  memset(&ds, 0, sizeof ds);
  int64_t shape[3] = {1, 4, 4};
  TU_OK(nb_dataset_alloc(&ds, 40, 3, shape));
  for (int64_t i = 0; i < 40 * 16; i++) ds.x[i] = (float)i;
  for (int64_t i = 0; i < 40; i++) ds.y[i] = i % 5;
  nb_loader_options o = nb_loader_defaults(8);
  o.drop_last = 1;
  o.seed = 7;
  o.augment.crop_pad = 1;
  o.augment.hflip = 1;
  nb_loader *whole = NULL;
  TU_OK(nb_loader_new(&ds, &o, &whole));
  const int ns[2] = {2, 4};
  for (int c = 0; c < 2; c++) {
    int n = ns[c];
    nb_loader *part[4] = {NULL};
    for (int k = 0; k < n; k++) {
      nb_loader_options ok = o;
      ok.shards = n;
      ok.shard = k;
      ok.prefetch = k % 2; /* with and without the thread */
      TU_OK(nb_loader_new(&ds, &ok, &part[k]));
    }
    nb_loader_pos start = {0, 0, {{0}}};
    nb_rng_seed(&start.rng, 7);
    TU_OK(nb_loader_set_pos(whole, &start));
    for (int b = 0; b < 10; b++) { /* two epochs of 5 */
      nb_batch w;
      TU_OK(nb_loader_next(whole, &w));
      int64_t per = 8 / n;
      for (int k = 0; k < n; k++) {
        nb_batch s;
        TU_OK(nb_loader_next(part[k], &s));
        assert_int_equal(s.size, per);
        assert_int_equal(s.epoch, w.epoch);
        assert_memory_equal(s.indices, w.indices + k * per, (size_t)per * sizeof(int64_t));
        assert_memory_equal(s.y, w.y + k * per, (size_t)per * sizeof(int64_t));
        assert_memory_equal(s.x, w.x + k * per * 16, (size_t)(per * 16) * sizeof(float));
      }
    }
    for (int k = 0; k < n; k++) nb_loader_free(part[k]);
  }
  nb_loader_free(whole);
  /* uneven shards and partial batches are refused */
  nb_loader *bad = NULL;
  nb_loader_options ob = o;
  ob.shards = 3;
  assert_int_equal(nb_loader_new(&ds, &ob, &bad), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "3 equal shards"));
  ob.shards = 2;
  ob.drop_last = 0;
  assert_int_equal(nb_loader_new(&ds, &ob, &bad), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "drop_last"));
  ob.drop_last = 1;
  ob.shard = 2;
  assert_int_equal(nb_loader_new(&ds, &ob, &bad), NB_ERR_INVALID_ARG);
  assert_null(bad);
  nb_dataset_free(&ds);
}

static void test_confusion_add_counts(void **state) {
  (void)state;
  nb_confusion *c = NULL;
  TU_OK(nb_confusion_new(2, &c));
  int64_t pred[3] = {0, 1, 1}, label[3] = {0, 0, 1};
  TU_OK(nb_confusion_add(c, pred, label, 3));
  const int64_t counts[4] = {5, 1, 2, 7}; /* row = label */
  TU_OK(nb_confusion_add_counts(c, counts));
  assert_int_equal(nb_confusion_count(c, 0, 0), 6);
  assert_int_equal(nb_confusion_count(c, 0, 1), 2);
  assert_int_equal(nb_confusion_count(c, 1, 0), 2);
  assert_int_equal(nb_confusion_count(c, 1, 1), 8);
  assert_int_equal(nb_confusion_total(c), 18);
  const int64_t bad[4] = {1, -1, 0, 0};
  assert_int_equal(nb_confusion_add_counts(c, bad), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_confusion_total(c), 18);
  nb_confusion_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_communicator),   cmocka_unit_test(test_mpi_needs_a_launcher),
      cmocka_unit_test(test_allreduce_mean_values), cmocka_unit_test(test_average_grads_buckets),
      cmocka_unit_test(test_schedule_overlaps),     cmocka_unit_test(test_loader_shards),
      cmocka_unit_test(test_confusion_add_counts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
