#define _DEFAULT_SOURCE /* mkdtemp */
/* LoRA adapters: the forward and gradients of an adapted Linear against
 * PyTorch (tests/ref/lora_ref.py, loralib's formula), the adapter gradients
 * against central differences, initialisation, training that moves only the
 * adapters (every base weight bit for bit unchanged, on a transformer block
 * and through a model file and nb_fit), adapter files, merging (merged
 * logits equal base + adapter logits), and bad configurations. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

static nb_lora make_lora(int rank, float alpha, const char *targets) {
  nb_lora l;
  memset(&l, 0, sizeof l);
  l.rank = rank;
  l.alpha = alpha;
  snprintf(l.targets, sizeof l.targets, "%s", targets);
  return l;
}

static void write_var(nb_state *st, const char *name, const float *v, int64_t n) {
  TU_OK(nb_state_write(st, name, v, (size_t)n * sizeof *v));
}

static float *read_var(const nb_state *st, const char *name, int64_t n) {
  float *v = malloc((size_t)n * sizeof *v);
  assert_non_null(v);
  TU_OK(nb_state_read(st, name, v, (size_t)n * sizeof *v));
  return v;
}

/* ---- forward, gradients and merge against PyTorch ------------------------------ */

static void check_ref_case(const tu_ref *ref, const char *cs) {
  int xnd, wnd;
  int64_t xs[NB_MAX_DIMS], ws[2], nx, nw, nb, na, nbb, ny;
  const float *x = tu_ref_get(ref, cs, "x", &xnd, xs, &nx);
  const float *w = tu_ref_get(ref, cs, "w", &wnd, ws, &nw);
  const float *b = tu_ref_get(ref, cs, "b", NULL, NULL, &nb);
  const float *a = tu_ref_get(ref, cs, "a", NULL, NULL, &na);
  const float *bb = tu_ref_get(ref, cs, "bb", NULL, NULL, &nbb);
  const float *rr = tu_ref_get(ref, cs, "rr", NULL, NULL, &ny);
  float alpha = tu_ref_get(ref, cs, "alpha", NULL, NULL, NULL)[0];
  int rank = (int)tu_ref_get(ref, cs, "rank", NULL, NULL, NULL)[0];
  int bias = tu_ref_get(ref, cs, "bias", NULL, NULL, NULL)[0] != 0.0f;
  int64_t out = ws[0];

  nb_lora l = make_lora(rank, alpha, "*");
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 7, .lora = &l};
  nb_tensor *xt = nb_input(g, "x", NB_F32, xnd, xs);
  nb_tensor_set_requires_grad(xt, 1);
  nb_tensor *y = nb_nn_linear(&nn, "lin", xt, out, bias);
  int64_t ys[NB_MAX_DIMS];
  memcpy(ys, xs, sizeof ys);
  ys[xnd - 1] = out;
  nb_tensor *loss = nb_sum(g, nb_mul(g, y, nb_constant(g, NB_F32, xnd, ys, rr)), 0, NULL, 0);
  TU_OK(nb_graph_status(g));
  TU_OK(nb_graph_backward(g, loss));
  nb_tensor *dx = nb_graph_grad(g, xt);
  nb_tensor *da = nb_graph_grad(g, nb_graph_find(g, "lin.lora_A"));
  nb_tensor *db = nb_graph_grad(g, nb_graph_find(g, "lin.lora_B"));
  assert_non_null(dx);
  assert_non_null(da);
  assert_non_null(db);
  nb_tensor *outs[4] = {y, dx, da, db};
  for (int i = 0; i < 4; i++) nb_tensor_set_output(outs[i]);
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  write_var(st, "lin.weight", w, nw);
  if (bias) write_var(st, "lin.bias", b, nb);
  write_var(st, "lin.lora_A", a, na);
  write_var(st, "lin.lora_B", bb, nbb);
  TU_OK(nb_plan_set_input(plan, xt, x, (size_t)nx * sizeof *x));
  TU_OK(nb_plan_run(plan));
  const char *names[4] = {"y", "dx", "da", "dbb"};
  for (int i = 0; i < 4; i++) {
    int64_t n;
    const float *want = tu_ref_get(ref, cs, names[i], NULL, NULL, &n);
    assert_int_equal(n, nb_tensor_numel(outs[i]));
    float *got = malloc((size_t)n * sizeof *got);
    TU_OK(nb_plan_get(plan, outs[i], got, (size_t)n * sizeof *got));
    char what[96];
    snprintf(what, sizeof what, "%s %s", cs, names[i]);
    tu_assert_close(what, got, want, (size_t)n, 1e-5, 1e-5);
    free(got);
  }
  /* merging folds (alpha / r) B A into the weight and zeroes B */
  TU_OK(nb_lora_merge(st, &l));
  float *wm = read_var(st, "lin.weight", nw), *bz = read_var(st, "lin.lora_B", nbb);
  tu_assert_close("merged weight", wm, tu_ref_get(ref, cs, "wm", NULL, NULL, NULL), (size_t)nw,
                  1e-6, 1e-6);
  for (int64_t i = 0; i < nbb; i++) assert_true(bz[i] == 0.0f);
  free(wm);
  free(bz);
  nb_plan_free(plan);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

static void test_forward_matches_torch(void **state) {
  (void)state;
  tu_ref *ref = tu_ref_load("lora.txt");
  check_ref_case(ref, "seq_2x3x5_to_4_r2");
  check_ref_case(ref, "flat_6x7_to_3_r3_nobias");
  check_ref_case(ref, "wide_4x16_to_12_r1");
  tu_ref_free(ref);
}

/* ---- adapter gradients against central differences ------------------------------ */

enum { GN = 3, GIN = 5, GOUT = 4, GR = 2 };

static double host_loss(nb_plan *plan, nb_tensor *y, const float *r) {
  float v[GN * GOUT];
  TU_OK(nb_plan_run(plan));
  TU_OK(nb_plan_get(plan, y, v, sizeof v));
  double s = 0;
  for (int i = 0; i < GN * GOUT; i++) s += (double)v[i] * r[i];
  return s;
}

static void test_adapter_gradcheck(void **state) {
  (void)state;
  nb_lora l = make_lora(GR, 3.0f, "lin");
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 5, .lora = &l, .freeze_base = 1};
  int64_t xs[2] = {GN, GIN}, ys[2] = {GN, GOUT};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs);
  nb_tensor *y = nb_nn_linear(&nn, "lin", x, GOUT, 1);
  float *r = tu_rand(GN * GOUT, -1.0f, 1.0f, 9);
  nb_tensor *loss = nb_sum(g, nb_mul(g, y, nb_constant(g, NB_F32, 2, ys, r)), 0, NULL, 0);
  TU_OK(nb_graph_backward(g, loss));
  nb_tensor *pa = nb_graph_find(g, "lin.lora_A"), *pb = nb_graph_find(g, "lin.lora_B");
  nb_tensor *da = nb_graph_grad(g, pa), *db = nb_graph_grad(g, pb);
  /* frozen base: no gradient is even built for it */
  assert_null(nb_graph_grad(g, nb_graph_find(g, "lin.weight")));
  assert_null(nb_graph_grad(g, nb_graph_find(g, "lin.bias")));
  nb_tensor_set_output(y);
  nb_tensor_set_output(da);
  nb_tensor_set_output(db);
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  float *xv = tu_rand(GN * GIN, -1.0f, 1.0f, 10);
  TU_OK(nb_plan_set_input(plan, x, xv, sizeof(float) * GN * GIN));
  /* B != 0, else A's gradient is zero */
  float *bv = tu_rand(GOUT * GR, -1.0f, 1.0f, 11);
  write_var(st, "lin.lora_B", bv, GOUT * GR);
  TU_OK(nb_plan_run(plan));
  float ga[GR * GIN], gb[GOUT * GR];
  TU_OK(nb_plan_get(plan, da, ga, sizeof ga));
  TU_OK(nb_plan_get(plan, db, gb, sizeof gb));
  const struct {
    const char *name;
    int64_t n;
    const float *grad;
  } ps[2] = {{"lin.lora_A", GR * GIN, ga}, {"lin.lora_B", GOUT * GR, gb}};
  const double eps = 1e-2;
  for (int k = 0; k < 2; k++) {
    float *p = read_var(st, ps[k].name, ps[k].n);
    for (int64_t i = 0; i < ps[k].n; i++) {
      float keep = p[i];
      p[i] = (float)(keep + eps);
      write_var(st, ps[k].name, p, ps[k].n);
      double up = host_loss(plan, y, r);
      p[i] = (float)(keep - eps);
      write_var(st, ps[k].name, p, ps[k].n);
      double down = host_loss(plan, y, r);
      p[i] = keep;
      write_var(st, ps[k].name, p, ps[k].n);
      /* y is linear in A and in B, so central differences are exact up to
       * the f32 rounding of y */
      double fd = (up - down) / (2 * eps);
      double got = ps[k].grad[i];
      if (!(fabs(got - fd) <= 1e-4 + 1e-3 * fabs(fd)))
        fail_msg("%s[%lld]: autodiff %.8g, finite differences %.8g", ps[k].name, (long long)i, got,
                 fd);
    }
    free(p);
  }
  free(r);
  free(xv);
  free(bv);
  nb_plan_free(plan);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

/* ---- initialisation and parameters ------------------------------------------------ */

static void test_init_and_names(void **state) {
  (void)state;
  enum { IN = 64, OUT = 48, R = 8, N = 4 };
  nb_lora l = make_lora(R, 16.0f, " fc , proj ");
  assert_true(nb_lora_matches(&l, "fc1"));
  assert_true(nb_lora_matches(&l, "h.0.attn.proj"));
  assert_false(nb_lora_matches(&l, "h.0.attn.qkv"));
  assert_false(nb_lora_matches(NULL, "fc1"));
  nb_lora all = make_lora(1, 1.0f, "*");
  assert_true(nb_lora_matches(&all, "anything"));
  assert_true(nb_lora_is_adapter("fc1.lora_A"));
  assert_true(nb_lora_is_adapter("h.0.attn.qkv.lora_B"));
  assert_false(nb_lora_is_adapter("fc1.weight"));
  assert_false(nb_lora_is_adapter("fc1.lora_A.adam_m"));

  nb_graph *g = nb_graph_new();
  nb_nn plain = {.g = g, .seed = 3};
  nb_nn adapted = {.g = g, .seed = 3, .lora = &l, .freeze_base = 1};
  int64_t xs[2] = {N, IN};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs);
  nb_tensor *y0 = nb_nn_linear(&plain, "fc1", x, OUT, 1);
  int first = nb_graph_node_count(g);
  nb_tensor *y1 = nb_nn_linear(&adapted, "fc1", x, OUT, 1);
  nb_tensor *y2 = nb_nn_linear(&adapted, "head", x, OUT, 1); /* not a target */
  TU_OK(nb_graph_status(g));
  TU_OK(nb_nn_finish(&adapted, first));
  /* parameter order and flags: the base frozen, the adapters trainable */
  const char *want[] = {"fc1.weight", "fc1.bias",    "fc1.lora_A",
                        "fc1.lora_B", "head.weight", "head.bias"};
  int k = 0;
  for (int i = first; i < nb_graph_node_count(g); i++) {
    nb_tensor *t = nb_graph_node(g, i);
    if (strcmp(nb_tensor_op_name(t), "variable")) continue;
    assert_true(k < 6);
    assert_string_equal(nb_tensor_name(t), want[k]);
    assert_int_equal(nb_tensor_requires_grad(t), nb_lora_is_adapter(want[k]));
    k++;
  }
  assert_int_equal(k, 6);
  nb_tensor *pa = nb_graph_find(g, "fc1.lora_A");
  assert_int_equal(nb_tensor_shape(pa)[0], R);
  assert_int_equal(nb_tensor_shape(pa)[1], IN);
  nb_tensor *pb = nb_graph_find(g, "fc1.lora_B");
  assert_int_equal(nb_tensor_shape(pb)[0], OUT);
  assert_int_equal(nb_tensor_shape(pb)[1], R);
  nb_tensor_set_output(y0);
  nb_tensor_set_output(y1);
  nb_tensor_set_output(y2);
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  float *xv = tu_rand(N * IN, -1.0f, 1.0f, 2);
  TU_OK(nb_plan_set_input(plan, x, xv, sizeof(float) * N * IN));
  TU_OK(nb_plan_run(plan));
  /* B = 0: a fresh adapter leaves the output bit for bit as it was */
  float a0[N * OUT], a1[N * OUT];
  TU_OK(nb_plan_get(plan, y0, a0, sizeof a0));
  TU_OK(nb_plan_get(plan, y1, a1, sizeof a1));
  assert_memory_equal(a0, a1, sizeof a0);
  /* A ~ U(+-1/sqrt(in)) (loralib's kaiming_uniform_(a=sqrt(5))); B zeros */
  float *av = read_var(st, "fc1.lora_A", R * IN), *bv = read_var(st, "fc1.lora_B", OUT * R);
  double bound = 1.0 / sqrt((double)IN), mean = 0, amax = 0;
  for (int i = 0; i < R * IN; i++) {
    assert_true(fabs(av[i]) <= bound);
    mean += av[i];
    if (fabs(av[i]) > amax) amax = fabs(av[i]);
  }
  mean /= R * IN;
  assert_true(fabs(mean) < 0.1 * bound); /* 512 draws: the mean's sd is 0.026 bound */
  assert_true(amax > 0.95 * bound);
  for (int i = 0; i < OUT * R; i++) assert_true(bv[i] == 0.0f);
  free(av);
  free(bv);
  free(xv);
  nb_plan_free(plan);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

/* ---- training moves only the adapters; merging ----------------------------------- */

enum { TB = 2, TT = 6, TC = 16, TH = 2, TV = 11 };

typedef struct {
  nb_graph *g;
  nb_tensor *x, *labels, *logits, *loss;
  nb_optimizer *opt;
  nb_plan *plan;
} gpt_step;

/* A GPT-like network on float inputs: a transformer block and a head. */
static void build_gpt(gpt_step *s, const nb_lora *l, int training, nb_backend *be, nb_state *st) {
  memset(s, 0, sizeof *s);
  s->g = nb_graph_new();
  nb_graph *g = s->g;
  nb_nn nn = {.g = g, .training = training, .seed = 21, .lora = l, .freeze_base = l != NULL};
  int64_t xs[3] = {TB, TT, TC}, n = TB * TT, flat[2] = {TB * TT, TV};
  s->x = nb_input(g, "x", NB_F32, 3, xs);
  nb_tensor *h = nb_nn_transformer_block(&nn, "h.0", s->x, TH, 1, 4);
  h = nb_nn_layer_norm(&nn, "ln_f", h, 1e-5f);
  s->logits = nb_reshape(g, nb_nn_linear(&nn, "head", h, TV, 0), 2, flat);
  TU_OK(nb_nn_finish(&nn, 0));
  nb_tensor_set_output(s->logits);
  if (training) {
    s->labels = nb_input(g, "labels", NB_I64, 1, &n);
    s->loss = nb_cross_entropy(g, s->logits, s->labels, 0.0f);
    nb_tensor_set_output(s->loss);
    TU_OK(nb_graph_backward(g, s->loss));
    /* AdamW with weight decay: a base weight that took part would move */
    TU_OK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.1f, 1, &s->opt));
  }
  TU_OK(nb_graph_status(g));
  TU_OK(nb_compile(g, be, st, NULL, &s->plan));
}

static void gpt_free(gpt_step *s) {
  nb_optimizer_free(s->opt);
  nb_plan_free(s->plan);
  nb_graph_free(s->g);
}

static void logits_of(gpt_step *s, const float *x, float *out) {
  TU_OK(nb_plan_set_input(s->plan, s->x, x, sizeof(float) * TB * TT * TC));
  TU_OK(nb_plan_run(s->plan));
  TU_OK(nb_plan_get(s->plan, s->logits, out, sizeof(float) * TB * TT * TV));
}

static int keep_base(const char *name, void *ctx) {
  (void)ctx;
  return !nb_lora_is_adapter(name) && !nb_optimizer_owns(name);
}

static void test_train_adapters_only_then_merge(void **state) {
  (void)state;
  nb_lora l = make_lora(4, 8.0f, "attn");
  l.dropout = 0.1f;
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  gpt_step train;
  build_gpt(&train, &l, 1, be, st);
  /* adapters on the attention's two Linear layers only, and only they train */
  assert_non_null(nb_graph_find(train.g, "h.0.attn.qkv.lora_A"));
  assert_non_null(nb_graph_find(train.g, "h.0.attn.proj.lora_B"));
  assert_null(nb_graph_find(train.g, "h.0.mlp.fc.lora_A"));
  assert_null(nb_graph_find(train.g, "head.lora_A"));
  assert_int_equal(nb_optimizer_param_count(train.opt), 4);
  tu_snapshot before, after;
  tu_snapshot_take(st, &before);
  float *x = tu_rand(TB * TT * TC, -1.0f, 1.0f, 31);
  int64_t labels[TB * TT];
  for (int i = 0; i < TB * TT; i++) labels[i] = (i * 7 + 3) % TV;
  float first_loss = 0, loss = 0;
  for (int step = 1; step <= 4; step++) {
    TU_OK(nb_plan_set_input(train.plan, train.x, x, sizeof(float) * TB * TT * TC));
    TU_OK(nb_plan_set_input(train.plan, train.labels, labels, sizeof labels));
    TU_OK(nb_optimizer_feed(train.opt, train.plan, step, 1e-2f));
    TU_OK(nb_plan_run(train.plan));
    TU_OK(nb_plan_get(train.plan, train.loss, &loss, sizeof loss));
    if (step == 1) first_loss = loss;
  }
  assert_true(loss < first_loss);
  tu_snapshot_take(st, &after);
  assert_int_equal(before.n, after.n);
  int adapters = 0;
  for (int i = 0; i < before.n; i++) {
    const char *name = before.name[i];
    assert_string_equal(name, after.name[i]);
    /* the optimizer keeps moments for the adapters only */
    if (nb_optimizer_owns(name)) {
      char owner[256];
      snprintf(owner, sizeof owner, "%.*s", (int)(strrchr(name, '.') - name), name);
      assert_true(nb_lora_is_adapter(owner));
      continue;
    }
    if (nb_lora_is_adapter(name)) {
      adapters++;
      if (!memcmp(before.v[i], after.v[i], before.bytes[i])) fail_msg("%s did not change", name);
    } else if (memcmp(before.v[i], after.v[i], before.bytes[i])) {
      fail_msg("base variable %s changed", name);
    }
  }
  assert_int_equal(adapters, 4);

  /* base + adapters (eval mode: no dropout) */
  gpt_step eval_lora, eval_base;
  build_gpt(&eval_lora, &l, 0, be, st);
  float with[TB * TT * TV], merged[TB * TT * TV], reloaded[TB * TT * TV];
  logits_of(&eval_lora, x, with);

  /* adapters saved apart from the base weights, and loaded into a fresh state */
  char dir[] = "/tmp/nb_lora_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char apath[128], bpath[128];
  snprintf(apath, sizeof apath, "%s/lora.safetensors", dir);
  snprintf(bpath, sizeof bpath, "%s/base.safetensors", dir);
  TU_OK(nb_lora_save(apath, st, &l));
  TU_OK(nb_safetensors_save_if(bpath, st, keep_base, NULL, NULL));
  nb_safetensors *f;
  TU_OK(nb_safetensors_open(apath, &f));
  assert_int_equal(nb_safetensors_count(f), 4);
  for (int i = 0; i < 4; i++) assert_true(nb_lora_is_adapter(nb_safetensors_tensor(f, i)->name));
  assert_string_equal(nb_kv_get(nb_safetensors_metadata(f), "format"), "nabla.lora");
  nb_safetensors_close(f);
  nb_lora back;
  TU_OK(nb_lora_read_config(apath, &back));
  assert_int_equal(back.rank, 4);
  assert_true(back.alpha == 8.0f);
  assert_true(back.dropout == 0.1f);
  assert_string_equal(back.targets, "attn");
  nb_state *st2;
  TU_OK(nb_state_new(be, &st2));
  gpt_step fresh;
  build_gpt(&fresh, &back, 0, be, st2);
  TU_OK(nb_safetensors_load(bpath, st2, NULL, NB_SAFETENSORS_ALLOW_MISSING));
  TU_OK(nb_lora_load(apath, st2));
  logits_of(&fresh, x, reloaded);
  assert_memory_equal(with, reloaded, sizeof with);

  /* merged: the same network without adapters gives the same logits */
  TU_OK(nb_lora_merge(st, &l));
  build_gpt(&eval_base, NULL, 0, be, st);
  logits_of(&eval_base, x, merged);
  tu_assert_close("merged logits", merged, with, TB * TT * TV, 1e-5, 1e-5);
  /* B is zero now: the adapted graph on the merged state agrees too */
  logits_of(&eval_lora, x, reloaded);
  tu_assert_close("adapted graph, merged state", reloaded, with, TB * TT * TV, 1e-5, 1e-5);

  /* merging the files, no model involved, gives the same weights */
  char mpath[128];
  snprintf(mpath, sizeof mpath, "%s/merged.safetensors", dir);
  TU_OK(nb_lora_merge_files(bpath, apath, mpath));
  TU_OK(nb_safetensors_open(mpath, &f));
  for (int i = 0; i < nb_safetensors_count(f); i++)
    assert_false(nb_lora_is_adapter(nb_safetensors_tensor(f, i)->name));
  assert_string_equal(nb_kv_get(nb_safetensors_metadata(f), "lora_merged"), apath);
  nb_safetensors_close(f);
  nb_state *st3;
  TU_OK(nb_state_new(be, &st3));
  gpt_step from_file;
  build_gpt(&from_file, NULL, 0, be, st3);
  TU_OK(nb_safetensors_load(mpath, st3, NULL, 0));
  logits_of(&from_file, x, reloaded);
  assert_memory_equal(reloaded, merged, sizeof merged);

  unlink(mpath);
  unlink(apath);
  unlink(bpath);
  rmdir(dir);
  gpt_free(&from_file);
  nb_state_free(st3);
  gpt_free(&fresh);
  gpt_free(&eval_base);
  gpt_free(&eval_lora);
  gpt_free(&train);
  tu_snapshot_free(&before);
  tu_snapshot_free(&after);
  free(x);
  nb_state_free(st2);
  nb_state_free(st);
  nb_backend_free(be);
}

/* ---- a model file with adapters, trained by nb_fit ------------------------------- */

static const char *mlp_cfg = "[net]\n"
                             "input = 1, 4, 4\n"
                             "classes = 3\n"
                             "[train]\n"
                             "optimizer = adamw\n"
                             "weight_decay = 0.05\n"
                             "lr = 0.01\n"
                             "epochs = 1\n"
                             "batch = 16\n"
                             "[flatten]\n"
                             "[linear fc1]\n"
                             "out = 12\n"
                             "activation = relu\n"
                             "[linear fc2]\n"
                             "out = 3\n";

static void make_data(nb_dataset *d, int64_t n) {
  int64_t shape[3] = {1, 4, 4};
  TU_OK(nb_dataset_alloc(d, n, 3, shape));
  TU_OK(nb_dataset_set_classes(d, 3, NULL));
  nb_rng r;
  nb_rng_seed(&r, 4);
  for (int64_t i = 0; i < n; i++) {
    d->y[i] = (int64_t)(nb_rng_next(&r) % 3);
    for (int p = 0; p < 16; p++)
      d->x[i * 16 + p] = (float)nb_rng_uniform(&r) + (p / 6 == d->y[i] ? 1.0f : 0.0f);
  }
}

static void test_model_file_fit(void **state) {
  (void)state;
  nb_model *m;
  TU_OK(nb_model_parse(mlp_cfg, "<mlp>", &m));
  int64_t full = 0, trainable = 0;
  TU_OK(nb_model_param_count(m, &full));
  assert_int_equal(full, 16 * 12 + 12 + 12 * 3 + 3);
  nb_lora l = make_lora(2, 4.0f, "fc1");
  l.dropout = 0.2f;
  TU_OK(nb_model_set_lora(m, &l));
  assert_int_equal(nb_model_lora(m)->rank, 2);
  TU_OK(nb_model_param_count(m, &trainable));
  assert_int_equal(trainable, 2 * 16 + 12 * 2); /* A [2, 16], B [12, 2] */

  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  /* base weights first, as `nabla train --init-from` loads them */
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 1};
  nb_tensor *x = nb_model_new_input(m, g, "x", 1), *y;
  TU_OK(nb_model_set_lora(m, NULL));
  TU_OK(nb_model_build(m, &nn, x, &y));
  nb_tensor_set_output(y);
  nb_plan *p;
  TU_OK(nb_compile(g, be, st, NULL, &p));
  nb_plan_free(p);
  nb_graph_free(g);
  tu_snapshot before, after;
  tu_snapshot_take(st, &before);
  assert_int_equal(before.n, 4);

  TU_OK(nb_model_set_lora(m, &l));
  nb_dataset train, test;
  make_data(&train, 64);
  make_data(&test, 20);
  nb_fit_options o = nb_fit_defaults();
  o.progress = NB_PROGRESS_OFF;
  o.log = fopen("/dev/null", "w");
  assert_non_null(o.log);
  nb_fit_result res;
  TU_OK(nb_fit(m, be, st, &train, &test, &o, &res));
  fclose(o.log);
  assert_int_equal(res.steps, 4);
  tu_snapshot_take(st, &after);
  int found = 0;
  for (int i = 0; i < after.n; i++) {
    const char *name = after.name[i];
    if (nb_optimizer_owns(name)) continue;
    assert_true(nb_lora_is_adapter(name) == (strncmp(name, "fc1.lora_", 9) == 0));
    for (int j = 0; j < before.n; j++)
      if (!strcmp(before.name[j], name)) {
        found++;
        if (memcmp(before.v[j], after.v[i], before.bytes[j]))
          fail_msg("base variable %s changed", name);
      }
  }
  assert_int_equal(found, 4);
  float *bv = read_var(st, "fc1.lora_B", 12 * 2);
  int nonzero = 0;
  for (int i = 0; i < 24; i++) nonzero += bv[i] != 0.0f;
  assert_true(nonzero > 0);
  free(bv);
  tu_snapshot_free(&before);
  tu_snapshot_free(&after);
  nb_dataset_free(&train);
  nb_dataset_free(&test);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
}

/* ---- bad configurations ----------------------------------------------------------- */

static void expect_error(nb_status st, nb_status want, const char *text) {
  assert_int_equal(st, want);
  if (!strstr(nb_last_error(), text))
    fail_msg("error '%s' does not mention '%s'", nb_last_error(), text);
}

static void expect_graph_error(nb_graph *g, const char *text) {
  assert_int_not_equal(nb_graph_status(g), NB_OK);
  if (!strstr(nb_graph_error(g), text))
    fail_msg("error '%s' does not mention '%s'", nb_graph_error(g), text);
}

static int keep_fc1(const char *name, void *ctx) {
  (void)ctx;
  return !strncmp(name, "fc1.", 4);
}

static void test_bad_configs(void **state) {
  (void)state;
  nb_lora l = make_lora(0, 1.0f, "fc");
  expect_error(nb_lora_check(&l), NB_ERR_INVALID_ARG, "rank must be >= 1, got 0");
  l = make_lora(2, 0.0f, "fc");
  expect_error(nb_lora_check(&l), NB_ERR_INVALID_ARG, "alpha");
  l = make_lora(2, NAN, "fc");
  expect_error(nb_lora_check(&l), NB_ERR_INVALID_ARG, "alpha");
  l = make_lora(2, 1.0f, "fc");
  l.dropout = 1.0f;
  expect_error(nb_lora_check(&l), NB_ERR_INVALID_ARG, "dropout");
  l = make_lora(2, 1.0f, " , ");
  expect_error(nb_lora_check(&l), NB_ERR_INVALID_ARG, "no target layers");
  expect_error(nb_lora_check(NULL), NB_ERR_INVALID_ARG, "NULL");

  /* in the layer: rank 0, and a rank above min(in, out) */
  nb_graph *g = nb_graph_new();
  l = make_lora(0, 1.0f, "*");
  nb_nn nn = {.g = g, .lora = &l};
  int64_t xs[2] = {2, 8};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs);
  assert_null(nb_nn_linear(&nn, "fc", x, 4, 1));
  expect_graph_error(g, "rank must be >= 1");
  nb_graph_free(g);
  g = nb_graph_new();
  l = make_lora(5, 1.0f, "*");
  nn.g = g;
  x = nb_input(g, "x", NB_F32, 2, xs);
  assert_null(nb_nn_linear(&nn, "fc", x, 4, 1));
  expect_graph_error(g, "fc: LoRA rank 5 exceeds min(in 8, out 4)");
  nb_graph_free(g);

  /* targets that match nothing: the build names the Linear layers there are */
  nb_model *m;
  TU_OK(nb_model_parse(mlp_cfg, "<mlp>", &m));
  l = make_lora(2, 1.0f, "attn");
  TU_OK(nb_model_set_lora(m, &l));
  g = nb_graph_new();
  nn = (nb_nn){.g = g};
  nb_tensor *y;
  x = nb_model_new_input(m, g, "x", 2);
  expect_error(nb_model_build(m, &nn, x, &y), NB_ERR_INVALID_ARG,
               "targets 'attn' match no Linear layer (Linear layers: fc1, fc2)");
  nb_graph_free(g);
  int64_t count;
  expect_error(nb_model_param_count(m, &count), NB_ERR_INVALID_ARG, "match no Linear layer");
  l = make_lora(13, 1.0f, "fc");
  TU_OK(nb_model_set_lora(m, &l));
  expect_error(nb_model_param_count(m, &count), NB_ERR_INVALID_ARG, "fc1: LoRA rank 13 exceeds");
  l.rank = 0;
  expect_error(nb_model_set_lora(m, &l), NB_ERR_INVALID_ARG, "rank");

  /* files: not an adapter file; adapters of another rank; merge without adapters */
  char dir[] = "/tmp/nb_lora_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char wpath[128], apath[128];
  snprintf(wpath, sizeof wpath, "%s/w.safetensors", dir);
  snprintf(apath, sizeof apath, "%s/a.safetensors", dir);
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  l = make_lora(2, 1.0f, "fc1");
  TU_OK(nb_model_set_lora(m, &l));
  g = nb_graph_new();
  nn = (nb_nn){.g = g};
  x = nb_model_new_input(m, g, "x", 1);
  TU_OK(nb_model_build(m, &nn, x, &y));
  nb_tensor_set_output(y);
  nb_plan *p;
  TU_OK(nb_compile(g, be, st, NULL, &p));
  nb_plan_free(p);
  nb_graph_free(g);
  TU_OK(nb_safetensors_save(wpath, st, "fc2", NULL));
  nb_lora got;
  expect_error(nb_lora_read_config(wpath, &got), NB_ERR_FORMAT, "not a LoRA adapter file");
  expect_error(nb_lora_load(wpath, st), NB_ERR_FORMAT, "not a LoRA adapter file");
  nb_lora wrong = make_lora(3, 1.0f, "fc1");
  expect_error(nb_lora_save(apath, st, &wrong), NB_ERR_INVALID_ARG,
               "'fc1.lora_A' has shape [2, 16], not rank 3 of the configuration");
  TU_OK(nb_lora_save(apath, st, &l));
  /* an adapter file that also carries base tensors: merging it would
   * replace the base weights with its own, so it is refused */
  char xpath[128], mpath[128];
  snprintf(xpath, sizeof xpath, "%s/x.safetensors", dir);
  snprintf(mpath, sizeof mpath, "%s/m.safetensors", dir);
  nb_kv *meta;
  TU_OK(nb_kv_new(&meta));
  TU_OK(nb_kv_set(meta, "format", NB_LORA_FORMAT_NAME));
  TU_OK(nb_kv_set(meta, "format_version", "1"));
  TU_OK(nb_kv_set(meta, "rank", "2"));
  TU_OK(nb_kv_set(meta, "alpha", "1"));
  TU_OK(nb_kv_set(meta, "dropout", "0"));
  TU_OK(nb_kv_set(meta, "targets", "fc1"));
  TU_OK(nb_safetensors_save_if(xpath, st, keep_fc1, NULL, meta));
  nb_kv_free(meta);
  expect_error(nb_lora_merge_files(wpath, xpath, mpath), NB_ERR_FORMAT,
               "is not a LoRA adapter (.lora_A / .lora_B)");
  assert_int_not_equal(access(mpath, F_OK), 0);
  expect_error(nb_lora_load(xpath, st), NB_ERR_FORMAT, "is not a LoRA adapter (.lora_A / .lora_B)");
  unlink(xpath);
  nb_state *st3;
  TU_OK(nb_state_new(be, &st3));
  wrong.rank = 3;
  TU_OK(nb_model_set_lora(m, &wrong));
  g = nb_graph_new();
  nn = (nb_nn){.g = g};
  x = nb_model_new_input(m, g, "x", 1);
  TU_OK(nb_model_build(m, &nn, x, &y));
  nb_tensor_set_output(y);
  TU_OK(nb_compile(g, be, st3, NULL, &p));
  nb_plan_free(p);
  nb_graph_free(g);
  expect_error(nb_lora_load(apath, st3), NB_ERR_SHAPE, "fc1.lora_A");
  expect_error(nb_lora_merge(st3, &l), NB_ERR_SHAPE, "do not fit rank 2");
  nb_state *empty;
  TU_OK(nb_state_new(be, &empty));
  expect_error(nb_lora_merge(empty, &l), NB_ERR_INVALID_ARG, "no LoRA adapters");
  expect_error(nb_lora_save(apath, empty, &l), NB_ERR_INVALID_ARG, "no LoRA adapters");
  unlink(wpath);
  unlink(apath);
  rmdir(dir);
  nb_state_free(empty);
  nb_state_free(st3);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
}

/* ---- merging is all or nothing -------------------------------------------------- */

/* A state of two adapted layers, l1 (weight [4, 3]) then l2 (weight
 * [5, 3]), rank 2, with l2.lora_B of `b2_rows` rows (5 fits), filled with
 * fixed random values. */
static nb_state *two_layer_state(nb_backend *be, int64_t b2_rows) {
  static const char *const names[6] = {"l1.weight", "l1.lora_A", "l1.lora_B",
                                       "l2.weight", "l2.lora_A", "l2.lora_B"};
  const int64_t shapes[6][2] = {{4, 3}, {2, 3}, {4, 2}, {5, 3}, {2, 3}, {b2_rows, 2}};
  nb_state *st;
  TU_OK(nb_state_new(be, &st));
  nb_graph *g = nb_graph_new();
  nb_init zeros = {NB_INIT_ZEROS, 0.0f, 0.0f, 0};
  for (int i = 0; i < 6; i++)
    nb_tensor_set_output(nb_variable(g, names[i], NB_F32, 2, shapes[i], zeros));
  nb_plan *p;
  TU_OK(nb_compile(g, be, st, NULL, &p));
  nb_plan_free(p);
  nb_graph_free(g);
  for (int i = 0; i < 6; i++) {
    int64_t n = shapes[i][0] * shapes[i][1];
    float *v = tu_rand((size_t)n, -1, 1, 40 + (uint64_t)i);
    write_var(st, names[i], v, n);
    free(v);
  }
  return st;
}

static void test_merge_all_or_nothing(void **state) {
  (void)state;
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  nb_lora l = make_lora(2, 3.0f, "*");
  tu_snapshot before, after;

  /* the second adapter's B does not fit its weight: nothing is written */
  nb_state *st = two_layer_state(be, 4);
  tu_snapshot_take(st, &before);
  expect_error(nb_lora_merge(st, &l), NB_ERR_SHAPE,
               "l2: lora_A [2, 3], lora_B [4, 2] and weight [5, 3] do not fit rank 2");
  tu_snapshot_take(st, &after);
  tu_snapshot_assert_equal(&before, &after, "after a shape mismatch in l2");
  tu_snapshot_free(&after);
  tu_snapshot_free(&before);
  nb_state_free(st);

  /* the second adapter's update overflows f32 (3e38 x 3e38 x 1.5): found
   * while computing l2, after l1's merged weight is computed, and l1 is not
   * written either: every variable keeps its bits */
  st = two_layer_state(be, 5);
  float big[10];
  for (int i = 0; i < 10; i++) big[i] = 3e38f;
  write_var(st, "l2.lora_A", big, 6);
  write_var(st, "l2.lora_B", big, 10);
  tu_snapshot_take(st, &before);
  expect_error(nb_lora_merge(st, &l), NB_ERR_INVALID_ARG, "l2: weight [0, 0] becomes inf");
  assert_non_null(strstr(nb_last_error(), "nothing was merged"));
  tu_snapshot_take(st, &after);
  tu_snapshot_assert_equal(&before, &after, "after an overflowing update in l2");
  tu_snapshot_free(&after);
  tu_snapshot_free(&before);
  nb_state_free(st);

  /* the same layers with finite adapters merge: W + 1.5 B A (a naive loop
   * in double), and both Bs become zero */
  st = two_layer_state(be, 5);
  static const char *const layers[2] = {"l1", "l2"};
  const int64_t outs[2] = {4, 5};
  float *want[2];
  for (int j = 0; j < 2; j++) {
    char wn[32], an[32], bn[32];
    snprintf(wn, sizeof wn, "%s.weight", layers[j]);
    snprintf(an, sizeof an, "%s.lora_A", layers[j]);
    snprintf(bn, sizeof bn, "%s.lora_B", layers[j]);
    float *w = read_var(st, wn, outs[j] * 3), *a = read_var(st, an, 6),
          *b = read_var(st, bn, outs[j] * 2);
    want[j] = malloc((size_t)outs[j] * 3 * sizeof(float));
    for (int64_t o = 0; o < outs[j]; o++)
      for (int64_t i = 0; i < 3; i++) {
        double d = 0;
        for (int64_t k = 0; k < 2; k++) d += (double)b[o * 2 + k] * a[k * 3 + i];
        want[j][o * 3 + i] = (float)(w[o * 3 + i] + 1.5 * d);
      }
    free(w);
    free(a);
    free(b);
  }
  TU_OK(nb_lora_merge(st, &l));
  for (int j = 0; j < 2; j++) {
    char wn[32], bn[32];
    snprintf(wn, sizeof wn, "%s.weight", layers[j]);
    snprintf(bn, sizeof bn, "%s.lora_B", layers[j]);
    float *w = read_var(st, wn, outs[j] * 3), *b = read_var(st, bn, outs[j] * 2);
    tu_assert_close(wn, w, want[j], (size_t)outs[j] * 3, 1e-7, 1e-6);
    for (int64_t i = 0; i < outs[j] * 2; i++) assert_true(b[i] == 0.0f);
    free(w);
    free(b);
    free(want[j]);
  }
  nb_state_free(st);
  nb_backend_free(be);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forward_matches_torch),
      cmocka_unit_test(test_adapter_gradcheck),
      cmocka_unit_test(test_init_and_names),
      cmocka_unit_test(test_train_adapters_only_then_merge),
      cmocka_unit_test(test_model_file_fit),
      cmocka_unit_test(test_bad_configs),
      cmocka_unit_test(test_merge_all_or_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
