/* Adversarial checks of the pipelined plans' shared memory
 * (src/compile/pipeline.c): micro-batch instances that run in another
 * instance's arena, results kept apart, one workspace per device, and the
 * 1F1B order. Models with views as outputs (a transpose, a slice, a
 * reshape of intermediate activations on several devices), batch norm,
 * dropout, a convolution whose bias + ReLU epilogue is an output, a
 * recomputed block, a forward-only plan, a sum output, gradients as
 * outputs, and placements that come back to a device (cpu:0 -> cpu:1 ->
 * cpu:0 -> cpu:2 -> cpu:3), M = 2 .. 8. Every run must give, bit for bit,
 * what GPipe order without any arena reuse gives (the reference), in order
 * and with a thread per device, over two steps with different data; and the
 * compiled plan must satisfy, checked here independently of pipeline.c:
 * the task order lists every dependency before its reader and each
 * segment's micro-batches in order, every value a task reads in place
 * lies in an arena whose last user on that device was the instance that
 * produced it, and every output lies in its instance's own buffer. */
#include <stdlib.h>
#include <string.h>

#include "../src/backend/backend_internal.h"
#include "../src/compile/mplan.h"
#include "test_util.h"

enum { MLP, CNN, FWD, RECOMPUTE, SKIP };

#define MAX_OUT 8
#define STEPS   2
#define BATCH   24
#define IN      6

typedef struct {
  int model;
  const char *dev[5]; /* device of each block (NULL: unplaced) */
  int M;
  int schedule;
  int sequential;
  int reuse;  /* nb_compile_options.reuse_memory */
  int nofuse; /* 1: nb_compile_options.fuse off (no groups, no epilogues) */
  int sgd;    /* 1: SGD with momentum after gradient clipping, else Adam */
} config;

typedef struct {
  int n_out;
  void *out[MAX_OUT];
  size_t out_bytes[MAX_OUT];
  tu_snapshot vars;
  int devices;
  size_t arena[5];
} result;

static void on(nb_graph *g, const char *dev) { TU_OK(nb_graph_set_device(g, dev)); }

/* Marks t as an output read as M micro-batches (split) or combined. */
static void output(nb_tensor **outs, int *n, nb_tensor *t, nb_micro how) {
  assert_non_null(t);
  nb_tensor_set_output(t);
  nb_tensor_set_micro(t, how);
  assert_true(*n < MAX_OUT);
  outs[(*n)++] = t;
}

static nb_tensor *param_grad(nb_graph *g, const char *name) {
  for (int i = 0; i < nb_graph_node_count(g); i++) {
    nb_tensor *t = nb_graph_node(g, i);
    if (nb_tensor_name(t) && !strcmp(nb_tensor_name(t), name)) return nb_graph_grad(g, t);
  }
  return NULL;
}

/* Builds the model for one micro-batch of b examples; returns the loss
 * (NULL for the forward-only model) and lists the outputs. */
static nb_tensor *build(const config *c, nb_graph *g, int64_t b, nb_tensor **x, nb_tensor **y,
                        nb_tensor **outs, int *n) {
  nb_nn nn = {.g = g, .training = 1, .seed = 5};
  nb_tensor *h, *logits;
  if (c->model == CNN) {
    int64_t xs[4] = {b, 2, 6, 6};
    *x = nb_input(g, "x", NB_F32, 4, xs);
    nb_tensor_set_micro(*x, NB_MICRO_SPLIT);
    nb_conv2d_params cp = nb_conv2d_defaults();
    cp.padding[0] = cp.padding[1] = 1;
    on(g, c->dev[0]);
    h = nb_relu(g, nb_nn_conv2d(&nn, "conv0", *x, 4, 3, 3, &cp, 1)); /* an epilogue */
    output(outs, n, h, NB_MICRO_SPLIT);
    on(g, c->dev[1]);
    h = nb_relu(g, nb_nn_batch_norm(&nn, "bn1", nb_nn_conv2d(&nn, "conv1", h, 4, 3, 3, &cp, 0),
                                    0.1f, 1e-5f));
    nb_pool2d_params pp = nb_pool2d_defaults(2, 2);
    h = nb_max_pool2d(g, h, &pp); /* [b, 4, 3, 3] */
    on(g, c->dev[2]);
    h = nb_nn_flatten(&nn, h);
    output(outs, n, nb_transpose(g, h, 0, 1), NB_MICRO_SPLIT); /* a view of a received value */
    h = nb_tanh(g, nb_nn_linear(&nn, "fc2", h, 8, 1));
    on(g, c->dev[3]);
    logits = nb_nn_linear(&nn, "fc3", h, 3, 1);
  } else {
    int64_t xs[2] = {b, IN};
    *x = nb_input(g, "x", NB_F32, 2, xs);
    nb_tensor_set_micro(*x, NB_MICRO_SPLIT);
    on(g, c->dev[0]);
    h = nb_relu(g, nb_nn_linear(&nn, "fc0", *x, 10, 1));
    output(outs, n, nb_slice(g, h, 1, 2, 9, 3), NB_MICRO_SPLIT); /* strided view */
    on(g, c->dev[1]);
    if (c->model == RECOMPUTE) TU_OK(nb_graph_recompute_begin(g));
    h = nb_nn_linear(&nn, "fc1", h, 12, 1);
    if (c->model != FWD) h = nb_nn_batch_norm(&nn, "bn1", h, 0.1f, 1e-5f);
    h = nb_tanh(g, h);
    if (c->model == RECOMPUTE) TU_OK(nb_graph_recompute_end(g));
    output(outs, n, nb_transpose(g, h, 0, 1), NB_MICRO_SPLIT);
    on(g, c->dev[2]);
    nb_tensor *h1 = h;
    h = nb_nn_linear(&nn, "fc2", h, 8, 1);
    /* skips: read on the device and level that made them, and two hops on */
    if (c->model == SKIP) h = nb_add(g, h, nb_slice(g, h1, 1, 0, 8, 1));
    if (c->model != FWD) h = nb_nn_dropout(&nn, "drop2", h, 0.25f);
    h = nb_relu(g, h);
    int64_t rs[3] = {b, 2, 4};
    output(outs, n, nb_reshape(g, h, 3, rs), NB_MICRO_SPLIT);
    output(outs, n, nb_sum(g, h, 0, NULL, 0), NB_MICRO_SUM);
    on(g, c->dev[3]);
    nb_tensor *h2 = h;
    h = nb_tanh(g, nb_nn_linear(&nn, "fc3", h, 8, 1));
    if (c->model == SKIP) h = nb_mul(g, h, h2);
    on(g, c->dev[4]);
    logits = nb_nn_linear(&nn, "fc4", h, 3, 1);
    if (c->model == SKIP) logits = nb_add(g, logits, nb_slice(g, h1, 1, 3, 6, 1));
  }
  TU_OK(nb_graph_set_device(g, NULL));
  output(outs, n, logits, NB_MICRO_SPLIT);
  if (c->model == SKIP || c->model == FWD)
    output(outs, n, nb_argmax(g, logits, 1, 0), NB_MICRO_SPLIT);
  if (c->model == FWD) return NULL;
  *y = nb_input(g, "y", NB_I64, 1, &b);
  nb_tensor_set_micro(*y, NB_MICRO_SPLIT);
  nb_tensor *loss = nb_cross_entropy(g, logits, *y, 0.0f);
  output(outs, n, loss, NB_MICRO_MEAN);
  TU_OK(nb_graph_backward(g, loss));
  output(outs, n, param_grad(g, c->model == CNN ? "conv0.weight" : "fc1.weight"), NB_MICRO_MEAN);
  return loss;
}

/* ---- checks of the compiled plan, independent of pipeline.c ------------------- */

static int in_range(const void *p, const void *base, size_t bytes) {
  return base && (const char *)p >= (const char *)base &&
         (const char *)p < (const char *)base + bytes;
}

static void check_plan(const nb_plan *plan, nb_tensor *const *outs, int n_out) {
  const nb_mplan *mp = plan->mp;
  assert_non_null(mp);
  /* dependencies come first (no deadlock with a thread per device, and the
   * in-order run is valid); each segment runs its micro-batches in order */
  for (int t = 0; t < mp->n_task; t++) {
    const mp_task *T = &mp->task[t];
    for (int k = 0; k < T->n_dep; k++) assert_true(T->dep[k] < t);
    for (int u = 0; u < t; u++)
      if (mp->task[u].seg == T->seg) assert_true(mp->task[u].inst < T->inst);
  }
  /* every input read in place (a hand-over aliased into another plan's
   * memory) must be read while that memory still holds the producer's
   * data: it lies in a kept buffer, never an arena (which every plan of
   * the device overwrites), and the last task before the reader whose
   * kept buffer holds it is the producing instance; or the producer kept
   * it apart */
  for (int t = 0; t < mp->n_task; t++) {
    const mp_task *T = &mp->task[t];
    const nb_plan *q = mp->seg[T->seg].inst[T->inst];
    for (int i = 0; i < q->n_nodes; i++) {
      const nb_node_info *in = &q->info[i];
      if (!in->keep || in->kind != NB_STORE_INPUT || !in->aliased) continue;
      int last = -1; /* last task before t whose plan's kept buffer holds the pointer */
      for (int u = 0; u < t; u++) {
        const nb_plan *r = mp->seg[mp->task[u].seg].inst[mp->task[u].inst];
        assert_false(in_range(in->own, r->arena, r->arena_bytes));
        if (in_range(in->own, r->kept, r->kept_bytes)) last = u;
      }
      int apart = 0;
      for (int s = 0; s < mp->n_seg && !apart; s++)
        for (int j = 0; j < mp->seg[s].n_inst; j++) {
          const nb_plan *r = mp->seg[s].inst[j];
          if (in_range(in->own, r->apart, r->apart_bytes)) apart = 1;
        }
      if (apart) continue;
      assert_true(last >= 0);
      /* the producer: the segment that hands this input over */
      int found = 0;
      for (int x = 0; x < mp->n_xfer; x++) {
        const mp_xfer *X = &mp->xfer[x];
        if (X->dst_seg != T->seg || X->dst->id != i || X->src_seg < 0) continue;
        int want = mp->seg[X->src_seg].n_inst > 1 ? T->inst : 0;
        assert_int_equal(mp->task[last].seg, X->src_seg);
        assert_int_equal(mp->task[last].inst, want);
        found = 1;
      }
      assert_true(found);
    }
  }
  if (getenv("NB_TEST_VERBOSE")) {
    int borrowed = 0, plans = 0, aliased = 0;
    for (int s = 0; s < mp->n_seg; s++)
      for (int i = 0; i < mp->seg[s].n_inst; i++) {
        plans++;
        borrowed += mp->seg[s].inst[i]->arena_borrowed;
        for (int k = 0; k < mp->seg[s].inst[i]->n_nodes; k++)
          aliased += mp->seg[s].inst[i]->info[k].aliased && mp->seg[s].inst[i]->info[k].keep;
      }
    fprintf(stderr, "%d plans, %d in another's arena, %d inputs read in place; order:", plans,
            borrowed, aliased);
    for (int t = mp->phase_first[MP_MICRO]; t < mp->phase_first[MP_MICRO + 1]; t++)
      fprintf(stderr, " %d.%d", mp->task[t].seg, mp->task[t].inst);
    fprintf(stderr, "\n");
  }
  /* results read after the run: each instance's own, never in an arena */
  for (int k = 0; k < n_out; k++) {
    const nb_tensor *o = outs[k];
    for (int s = 0; s < mp->n_seg; s++) {
      const mp_seg *S = &mp->seg[s];
      const nb_tensor *x = S->map[o->id];
      if (!x || S->n_inst < 2 || !(x->flags & NB_FLAG_OUTPUT)) continue;
      if (!mp_is_computed(mp_owner(o)) || mp->node_seg[mp_owner(o)->id] != s) continue;
      for (int i = 0; i < S->n_inst; i++) {
        const nb_plan *q = S->inst[i];
        const void *d = nb_plan_data(q, x);
        assert_non_null(d);
        for (int t = 0; t < mp->n_task; t++) {
          const nb_plan *r = mp->seg[mp->task[t].seg].inst[mp->task[t].inst];
          assert_false(in_range(d, r->arena, r->arena_bytes));
          assert_false(in_range(d, r->kept, r->kept_bytes));
        }
      }
    }
  }
}

/* ---- running ---------------------------------------------------------------------- */

static void run(const config *c, result *r) {
  memset(r, 0, sizeof *r);
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_backend_set_threads(be, 1));
  TU_OK(nb_state_new(be, &st));
  for (int d = 0; d < 4; d++) {
    char name[8];
    snprintf(name, sizeof name, "cpu:%d", d);
    nb_backend *dev;
    TU_OK(nb_state_device(st, name, &dev));
    TU_OK(nb_backend_set_threads(dev, 1)); /* the same arithmetic in order and threaded */
  }
  nb_graph *g = nb_graph_new();
  nb_tensor *x = NULL, *y = NULL, *outs[MAX_OUT];
  int n_out = 0;
  int64_t b = BATCH / c->M;
  nb_tensor *loss = build(c, g, b, &x, &y, outs, &n_out);
  nb_optimizer *opt = NULL;
  if (loss && c->sgd) TU_OK(nb_clip_grad_norm(g, 0.5f, NULL));
  if (loss && c->sgd) TU_OK(nb_optimizer_sgd(g, 0.9f, 0.01f, 0, &opt));
  if (loss && !c->sgd) TU_OK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.01f, 0, &opt));
  nb_compile_options o = nb_compile_defaults();
  o.micro_batches = c->M;
  o.schedule = c->schedule;
  o.sequential = c->sequential;
  o.reuse_memory = c->reuse;
  o.fuse = !c->nofuse;
  nb_plan *plan;
  TU_OK(nb_compile(g, be, st, &o, &plan));
  if (getenv("NB_TEST_VERBOSE")) TU_OK(nb_plan_print_placement(plan, stderr));
  check_plan(plan, outs, n_out);
  r->devices = nb_plan_device_count(plan);
  for (int d = 0; d < r->devices; d++) {
    nb_plan_device info;
    TU_OK(nb_plan_device_info(plan, d, &info));
    r->arena[d] = info.arena_bytes;
  }
  size_t xn = (size_t)nb_tensor_numel(x) * (size_t)c->M;
  r->n_out = n_out;
  for (int k = 0; k < n_out; k++) {
    size_t one = (size_t)nb_tensor_numel(outs[k]) * nb_dtype_size(nb_tensor_dtype(outs[k]));
    r->out_bytes[k] = nb_tensor_micro(outs[k]) == NB_MICRO_SPLIT ? one * (size_t)c->M : one;
    r->out[k] = malloc(r->out_bytes[k] * STEPS);
    assert_non_null(r->out[k]);
  }
  for (int s = 0; s < STEPS; s++) {
    float *xd = tu_rand(xn, -1.0f, 1.0f, 100 + (uint64_t)s);
    int64_t yd[BATCH];
    for (int i = 0; i < BATCH; i++) yd[i] = (i * 5 + s) % 3;
    TU_OK(nb_plan_set_input(plan, x, xd, xn * sizeof(float)));
    if (y) TU_OK(nb_plan_set_input(plan, y, yd, sizeof yd));
    if (opt) TU_OK(nb_optimizer_feed(opt, plan, s + 1, 0.05f));
    TU_OK(nb_plan_run(plan));
    for (int k = 0; k < n_out; k++)
      TU_OK(nb_plan_get(plan, outs[k], (char *)r->out[k] + (size_t)s * r->out_bytes[k],
                        r->out_bytes[k]));
    free(xd);
  }
  tu_snapshot_take(st, &r->vars);
  nb_plan_free(plan);
  nb_optimizer_free(opt);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
}

static void result_free(result *r) {
  for (int k = 0; k < r->n_out; k++) free(r->out[k]);
  tu_snapshot_free(&r->vars);
}

static void assert_same(const result *a, const result *b, const char *what) {
  assert_int_equal(a->n_out, b->n_out);
  for (int k = 0; k < a->n_out; k++) {
    assert_int_equal(a->out_bytes[k], b->out_bytes[k]);
    if (memcmp(a->out[k], b->out[k], a->out_bytes[k] * STEPS)) {
      const unsigned char *p = a->out[k], *q = b->out[k];
      size_t i = 0;
      while (p[i] == q[i]) i++;
      fail_msg("%s: output %d differs at byte %zu", what, k, i);
    }
  }
  tu_snapshot_assert_equal(&a->vars, &b->vars, what);
}

/* Every schedule, in order and threaded, with arenas shared, against GPipe
 * in order without any reuse. */
static void check_config(config c) {
  config ref = c;
  ref.schedule = NB_SCHEDULE_GPIPE;
  ref.sequential = 1;
  ref.reuse = 0;
  result want;
  run(&ref, &want);
  static const int variants[4][2] = {
      {NB_SCHEDULE_1F1B, 1}, {NB_SCHEDULE_1F1B, 0}, {NB_SCHEDULE_GPIPE, 1}, {NB_SCHEDULE_GPIPE, 0}};
  for (int v = 0; v < 4; v++) {
    config k = c;
    k.schedule = variants[v][0];
    k.sequential = variants[v][1];
    k.reuse = 1;
    result got;
    run(&k, &got);
    char what[128];
    snprintf(what, sizeof what, "model %d, M %d, fuse %d, %s, %s", c.model, c.M, !c.nofuse,
             k.schedule == NB_SCHEDULE_1F1B ? "1F1B" : "GPipe",
             k.sequential ? "in order" : "threads");
    assert_same(&got, &want, what);
    assert_int_equal(got.devices, want.devices);
    for (int d = 0; d < got.devices; d++) assert_true(got.arena[d] <= want.arena[d]);
    result_free(&got);
  }
  result_free(&want);
}

static void test_mlp_irregular(void **state) {
  (void)state;
  static const int Ms[] = {2, 3, 8};
  for (int m = 0; m < 3; m++) {
    config c = {MLP, {"cpu:0", "cpu:1", "cpu:0", "cpu:2", "cpu:3"}, Ms[m], 0, 1, 1, 0, 0};
    check_config(c);
  }
}

static void test_mlp_one_device(void **state) {
  (void)state;
  config c = {MLP, {NULL, NULL, NULL, NULL, NULL}, 4, 0, 1, 1, 0, 1};
  check_config(c);
  c.M = 8;
  c.nofuse = 1;
  check_config(c);
}

static void test_mlp_back_and_forth(void **state) {
  (void)state;
  config c = {MLP, {"cpu:1", "cpu:0", "cpu:1", "cpu:0", "cpu:1"}, 4, 0, 1, 1, 0, 0};
  check_config(c);
  config d = {MLP, {"cpu:2", "cpu:2", "cpu:0", "cpu:0", "cpu:2"}, 2, 0, 1, 1, 1, 1};
  check_config(d);
}

static void test_skips(void **state) {
  (void)state;
  config c = {SKIP, {"cpu:0", "cpu:1", "cpu:0", "cpu:2", "cpu:1"}, 4, 0, 1, 1, 0, 1};
  check_config(c);
  config d = {SKIP, {"cpu:0", "cpu:1", "cpu:1", "cpu:0", "cpu:0"}, 3, 0, 1, 1, 1, 0};
  check_config(d);
  config one = {SKIP, {NULL, NULL, NULL, NULL, NULL}, 6, 0, 1, 1, 0, 0};
  check_config(one);
}

static void test_cnn(void **state) {
  (void)state;
  config c = {CNN, {"cpu:0", "cpu:1", "cpu:0", "cpu:2", NULL}, 4, 0, 1, 1, 0, 0};
  check_config(c);
  config one = {CNN, {NULL, NULL, NULL, NULL, NULL}, 2, 0, 1, 1, 0, 1};
  check_config(one);
}

static void test_forward_only(void **state) {
  (void)state;
  config c = {FWD, {"cpu:0", "cpu:1", "cpu:0", "cpu:2", "cpu:1"}, 4, 0, 1, 1, 0, 0};
  check_config(c);
  config one = {FWD, {NULL, NULL, NULL, NULL, NULL}, 8, 0, 1, 1, 1, 0};
  check_config(one);
}

static void test_recompute(void **state) {
  (void)state;
  config c = {RECOMPUTE, {"cpu:0", "cpu:1", "cpu:0", "cpu:2", "cpu:3"}, 4, 0, 1, 1, 0, 1};
  check_config(c);
}

/* ---- memory while compiling -------------------------------------------------------
 * The CPU backend with its alloc and free counted: the bytes held at the
 * worst moment of nb_compile, against what the plan holds after it. */

static const nb_backend_vtable *real_vt;
static nb_backend_vtable counting_vt;
static struct {
  void *p;
  size_t n;
} live[4096];
static int n_live;
static size_t in_use, peak;

static nb_status count_alloc(nb_backend *be, size_t bytes, void **out) {
  nb_status st = real_vt->alloc(be, bytes, out);
  if (!st && n_live < 4096) {
    live[n_live].p = *out;
    live[n_live++].n = bytes;
    in_use += bytes;
    if (in_use > peak) peak = in_use;
  }
  return st;
}

static void count_free(nb_backend *be, void *p) {
  for (int i = 0; i < n_live; i++)
    if (live[i].p == p) {
      in_use -= live[i].n;
      live[i] = live[--n_live];
      break;
    }
  real_vt->free(be, p);
}

/* Gradient accumulation of an MLP in 8 micro-batches on one device: the
 * 8 instances run in one arena, and compiling them must not hold 8 arenas
 * at once either (on a GPU that peak is what decides whether it fits). */
static void test_compile_peak(void **state) {
  (void)state;
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  real_vt = be->vt;
  counting_vt = *be->vt;
  counting_vt.alloc = count_alloc;
  counting_vt.free = count_free;
  be->vt = &counting_vt;
  TU_OK(nb_state_new(be, &st));
  enum { MB = 8, B = 256, W = 128 };
  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {B / MB, 16}, yb = B / MB;
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs), *y = nb_input(g, "y", NB_I64, 1, &yb);
  nb_tensor_set_micro(x, NB_MICRO_SPLIT);
  nb_tensor_set_micro(y, NB_MICRO_SPLIT);
  nb_nn nn = {.g = g, .training = 1, .seed = 1};
  nb_tensor *h = nb_relu(g, nb_nn_linear(&nn, "fc0", x, W, 1));
  h = nb_relu(g, nb_nn_linear(&nn, "fc1", h, W, 1));
  h = nb_relu(g, nb_nn_linear(&nn, "fc2", h, W, 1));
  nb_tensor *loss = nb_cross_entropy(g, nb_nn_linear(&nn, "fc3", h, 3, 1), y, 0.0f);
  nb_tensor_set_output(loss);
  TU_OK(nb_graph_backward(g, loss));
  nb_optimizer *opt;
  TU_OK(nb_optimizer_sgd(g, 0.0f, 0.0f, 0, &opt));
  nb_compile_options o = nb_compile_defaults();
  o.micro_batches = MB;
  size_t before = in_use;
  peak = in_use;
  nb_plan *plan;
  TU_OK(nb_compile(g, be, st, &o, &plan));
  size_t held = in_use - before, worst = peak - before, arena = 0;
  const nb_mplan *mp = plan->mp;
  for (int s = 0; s < mp->n_seg; s++)
    if (mp->seg[s].n_inst > 1 && mp->seg[s].inst[0]->arena_bytes > arena)
      arena = mp->seg[s].inst[0]->arena_bytes;
  if (getenv("NB_TEST_VERBOSE"))
    fprintf(stderr, "compile: holds %zu bytes after, %zu at worst; one micro-batch arena %zu\n",
            held, worst, arena);
  assert_true(arena > 0);
  /* at most one micro-batch arena (and small buffers) above what stays */
  assert_true(worst <= held + arena + arena / 4);
  nb_plan_free(plan);
  nb_optimizer_free(opt);
  nb_graph_free(g);
  nb_state_free(st);
  be->vt = real_vt;
  nb_backend_free(be);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp_irregular),
      cmocka_unit_test(test_mlp_one_device),
      cmocka_unit_test(test_mlp_back_and_forth),
      cmocka_unit_test(test_skips),
      cmocka_unit_test(test_cnn),
      cmocka_unit_test(test_forward_only),
      cmocka_unit_test(test_recompute),
      cmocka_unit_test(test_compile_peak),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
