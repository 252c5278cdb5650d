/* The training loop for language models on text (nb_fit_text): random
 * windows of the token array, one compiled plan per step (forward, backward,
 * clipping, optimizer) and one for validation, progress, logs, and
 * checkpoints that resume bit for bit. nb_fit (fit.c) is its twin for
 * image and feature classifiers, organised by epochs instead of steps. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla/fit.h"
#include "nabla/nabla.h"
#include "run_logs.h"

/* ---- graphs -------------------------------------------------------------------- */

typedef struct {
  nb_graph *g;
  nb_plan *plan;
  nb_tensor *x, *y, *loss, *norm;
  nb_optimizer *opt;
  int64_t batch, ctx;
  nb_dtype in_dtype;
  int64_t *wide; /* i64 copy of a batch, for models whose input_dtype is i64 */
} lm_graph;

static void lm_free(lm_graph *s) {
  nb_optimizer_free(s->opt);
  nb_plan_free(s->plan);
  nb_graph_free(s->g);
  free(s->wide);
  memset(s, 0, sizeof *s);
}

/* The network on ids [batch, T] with the mean next-token cross-entropy
 * against targets [batch, T]; training adds the recipe's update. With
 * co->micro_batches M > 1 the graph is built for one micro-batch of
 * batch / M windows and each run takes the M of them at once (gradient
 * accumulation, or a pipeline over placed layers). */
static nb_status lm_build(const nb_model *m, const nb_recipe *r, int training, int64_t batch,
                          const nb_compile_options *co, nb_backend *be, nb_state *st, lm_graph *s) {
  memset(s, 0, sizeof *s);
  int64_t in[NB_MAX_DIMS];
  if (!nb_model_is_text(m) || nb_model_input_shape(m, in, &s->in_dtype) != 1)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: not a token-sequence model (expected [net] input = T with input_dtype "
                    "= i32 or i64)",
                    nb_model_source(m));
  s->batch = batch;
  s->ctx = in[0];
  if (s->in_dtype == NB_I64 && !(s->wide = malloc((size_t)(batch * s->ctx) * sizeof *s->wide)))
    return nb_error(NB_ERR_OOM, "fit_text: out of memory");
  s->g = nb_graph_new();
  if (!s->g) return nb_error(NB_ERR_OOM, "fit_text: out of memory");
  nb_graph *g = s->g;
  int64_t part = co->micro_batches > 1 ? batch / co->micro_batches : batch;
  int64_t bt[2] = {part, s->ctx}, rows = part * s->ctx;
  s->x = nb_model_new_input(m, g, "ids", part); /* marked NB_MICRO_SPLIT */
  s->y = nb_input(g, "targets", NB_I32, 2, bt);
  nb_tensor_set_micro(s->y, NB_MICRO_SPLIT);
  nb_nn nn = {.g = g,
              .training = training,
              .seed = r->seed,
              .init = NB_NN_INIT_TORCH,
              .recompute = training && r->recompute};
  nb_tensor *logits = NULL;
  nb_status rc = nb_graph_status(g);
  /* mixed precision: the network's matmuls and convolutions (autocast) */
  if (!rc) rc = nb_graph_set_autocast(g, nb_precision_dtype(r->precision));
  /* placed layers: the ones before the first placed layer run on be */
  if (!rc && nb_model_device_count(m)) rc = nb_graph_set_device(g, nb_backend_name(be));
  if (!rc) rc = nb_model_build(m, &nn, s->x, &logits);
  if (!rc) rc = nb_graph_set_device(g, NULL);
  if (!rc) rc = nb_graph_set_autocast(g, NB_F32);
  if (rc) return rc;
  int nd = nb_tensor_ndim(logits);
  const int64_t *ls = nb_tensor_shape(logits);
  if (nd != 3 || ls[0] != part || ls[1] != s->ctx) {
    char got[128];
    nb_shape_str(nd, ls, got, sizeof got);
    return nb_error(NB_ERR_SHAPE,
                    "%s: a text model must output [batch, T, vocab] (next-token logits at every "
                    "position), found %s",
                    nb_model_source(m), got);
  }
  int64_t flat[2] = {rows, ls[2]};
  s->loss = nb_cross_entropy(g, nb_reshape(g, logits, 2, flat), nb_reshape(g, s->y, 1, &rows),
                             training ? r->label_smoothing : 0.0f);
  nb_tensor_set_output(s->loss);
  rc = nb_graph_status(g);
  if (rc) return nb_error(rc, "%s: loss: %s", nb_model_source(m), nb_graph_error(g));
  if (training) rc = nb_recipe_update(r, g, s->loss, &s->norm, &s->opt);
  if (rc) return rc;
  return nb_compile(g, be, st, co, &s->plan);
}

/* Feeds a batch of ids and targets ([batch, T] each) and runs the plan. */
static nb_status lm_run(lm_graph *s, const int32_t *x, const int32_t *y, float *loss) {
  size_t n = (size_t)(s->batch * s->ctx);
  nb_status rc;
  if (s->wide) {
    for (size_t i = 0; i < n; i++) s->wide[i] = x[i];
    rc = nb_plan_set_input(s->plan, s->x, s->wide, n * sizeof *s->wide);
  } else {
    rc = nb_plan_set_input(s->plan, s->x, x, n * sizeof *x);
  }
  if (!rc) rc = nb_plan_set_input(s->plan, s->y, y, n * sizeof *y);
  if (!rc) rc = nb_plan_run(s->plan);
  if (!rc) rc = nb_plan_get(s->plan, s->loss, loss, sizeof *loss);
  return rc;
}

/* Every id must index the vocabulary: a bad one would read past the
 * embedding table. */
static nb_status check_tokens(const nb_model *m, const int32_t *tokens, int64_t n) {
  int64_t v = nb_model_classes(m);
  for (int64_t i = 0; v > 0 && i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= v)
      return nb_error(NB_ERR_INVALID_ARG,
                      "%s: token %lld is id %d, outside the model's vocabulary [0, %lld)",
                      nb_model_source(m), (long long)i, (int)tokens[i], (long long)v);
  return NB_OK;
}

/* ---- validation ------------------------------------------------------------------- */

/* `batches` batches of random validation windows from `seed`: the same
 * windows on every call. */
static nb_status eval_random(lm_graph *e, const int32_t *tokens, int64_t n, int batches,
                             uint64_t seed, int32_t *bx, int32_t *by, double *loss) {
  nb_token_windows w;
  nb_status rc = nb_token_windows_init(&w, tokens, n, e->ctx, seed);
  double sum = 0;
  for (int i = 0; !rc && i < batches; i++) {
    float l = 0;
    rc = nb_token_windows_next(&w, NB_TOKENS_VAL, e->batch, bx, by);
    if (!rc) rc = lm_run(e, bx, by, &l);
    sum += l;
  }
  if (!rc) *loss = sum / batches;
  return rc;
}

nb_status nb_evaluate_text(const nb_model *m, nb_backend *be, nb_state *st, const int32_t *tokens,
                           int64_t n, int64_t batch, int batches, uint64_t seed, double *loss) {
  if (!m || !be || !st || !tokens || !loss || batch < 1 || batches < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_evaluate_text: model, backend, state, tokens, loss, "
                                        "batch >= 1 and batches >= 0 are needed");
  nb_recipe r = *nb_model_recipe(m);
  int64_t in[NB_MAX_DIMS];
  if (nb_model_input_shape(m, in, NULL) != 1 || !nb_model_is_text(m))
    return nb_error(NB_ERR_INVALID_ARG, "nb_evaluate_text: %s is not a token-sequence model",
                    nb_model_source(m));
  int64_t t = in[0];
  nb_token_windows w;
  nb_status rc = nb_token_windows_init(&w, tokens, n, t, seed);
  if (!rc) rc = check_tokens(m, tokens, n);
  if (rc) return rc;
  /* every non-overlapping window of the validation part, its targets inside it */
  int64_t windows = (w.n_val - 1) / t;
  if (batches == 0 && batch > windows) batch = windows;
  lm_graph full, tail;
  /* both are freed below whatever fails first */
  memset(&full, 0, sizeof full);
  memset(&tail, 0, sizeof tail);
  int32_t *bx = malloc((size_t)(batch * t) * sizeof *bx), *by = malloc((size_t)(batch * t) * 4);
  rc = bx && by ? NB_OK : nb_error(NB_ERR_OOM, "nb_evaluate_text: out of memory");
  nb_compile_options co = nb_compile_defaults();
  if (!rc) rc = lm_build(m, &r, 0, batch, &co, be, st, &full);
  if (!rc && batches > 0) rc = eval_random(&full, tokens, n, batches, seed, bx, by, loss);
  if (!rc && batches == 0) {
    const int32_t *val = tokens + w.n_train;
    int64_t rem = windows % batch;
    if (rem) rc = lm_build(m, &r, 0, rem, &co, be, st, &tail);
    double sum = 0;
    for (int64_t at = 0; !rc && at < windows;) {
      lm_graph *s = windows - at >= batch ? &full : &tail;
      for (int64_t b = 0; b < s->batch; b++) {
        memcpy(bx + b * t, val + (at + b) * t, (size_t)t * sizeof *bx);
        memcpy(by + b * t, val + (at + b) * t + 1, (size_t)t * sizeof *by);
      }
      float l = 0;
      rc = lm_run(s, bx, by, &l);
      sum += (double)l * (double)s->batch;
      at += s->batch;
    }
    if (!rc) *loss = sum / (double)windows;
  }
  free(bx);
  free(by);
  lm_free(&full);
  lm_free(&tail);
  return rc;
}

/* ---- logs and checkpoints ---------------------------------------------------------- */

/* Everything besides the variables that the next step depends on: the
 * step (schedule, bias corrections), the plan's step (dropout masks) and
 * the training-window generator. Validation windows come from the seed. */
static nb_status save_checkpoint(const char *path, const nb_state *st, const nb_model *m,
                                 int64_t batch, int64_t step, uint64_t plan_step,
                                 const nb_token_windows *w) {
  nb_kv *kv = NULL;
  nb_status rc = nb_kv_new(&kv);
  if (!rc) rc = nb_kv_set_i64(kv, NB_CKPT_STEP, step);
  if (!rc) rc = nb_kv_set_i64(kv, NB_CKPT_BATCH, batch);
  if (!rc) rc = nb_kv_set_i64(kv, NB_CKPT_PLAN_STEP, (int64_t)plan_step);
  if (!rc) rc = nb_kv_set_rng(kv, "windows_rng", &w->rng[NB_TOKENS_TRAIN]);
  if (!rc) rc = nb_kv_set_i64(kv, "windows_block", w->block);
  if (!rc) rc = nb_kv_set(kv, NB_CKPT_MODEL, nb_model_source(m));
  if (!rc) rc = nb_checkpoint_save(path, st, kv);
  nb_kv_free(kv);
  return rc;
}

static nb_status load_checkpoint(const char *path, nb_state *st, int64_t batch, nb_token_windows *w,
                                 int64_t *step, uint64_t *plan_step) {
  nb_kv *kv = NULL;
  int64_t ps = 0, block = 0;
  nb_status rc = nb_checkpoint_load(path, st, 0, &kv);
  if (rc) return nb_run_resume_error(rc, path);
  rc = nb_run_check_batch(kv, path, batch, "windows");
  if (rc) {
    nb_kv_free(kv);
    return rc;
  }
  rc = nb_kv_get_i64(kv, NB_CKPT_STEP, step);
  if (!rc) rc = nb_kv_get_i64(kv, NB_CKPT_PLAN_STEP, &ps);
  if (!rc) rc = nb_kv_get_i64(kv, "windows_block", &block);
  if (!rc) rc = nb_kv_get_rng(kv, "windows_rng", &w->rng[NB_TOKENS_TRAIN]);
  nb_kv_free(kv);
  if (rc) return nb_error(rc, "resume from %s: %s", path, nb_last_error());
  if (block != w->block)
    return nb_error(NB_ERR_INVALID_ARG,
                    "resume from %s: its windows hold %lld tokens, the model %lld", path,
                    (long long)block, (long long)w->block);
  *plan_step = (uint64_t)ps;
  return NB_OK;
}

/* the columns of log.csv */
static const char *const log_cols[] = {"step", "lr", "train_loss", "val_loss", "tokens_per_sec"};

static nb_status log_point(nb_run_logs *l, int64_t step, double lr, double train, double val,
                           double tps) {
  nb_status rc = NB_OK;
  if (l->tb) {
    rc = nb_tb_scalar(l->tb, "train/loss", step, (float)train);
    if (!rc) rc = nb_tb_scalar(l->tb, "val/loss", step, (float)val);
    if (!rc) rc = nb_tb_scalar(l->tb, "lr", step, (float)lr);
    if (!rc) rc = nb_tb_flush(l->tb);
  }
  double row[5] = {(double)step, lr, train, val, tps};
  if (!rc && l->csv) rc = nb_csvlog_row(l->csv, row, 5);
  return rc;
}

/* ---- fit ----------------------------------------------------------------------------- */

/* The recipe with the options' overrides, its step count and schedule. */
static nb_status text_recipe(const nb_model *m, const nb_fit_options *o, FILE *log, nb_recipe *r,
                             nb_schedule *sched) {
  *r = *nb_model_recipe(m);
  if (o->steps > 0) r->steps = o->steps;
  if (o->eval_every > 0) r->eval_every = o->eval_every;
  if (o->batch > 0) r->batch = (int)o->batch;
  if (o->lr > 0) r->lr = o->lr;
  if (o->optimizer >= 0) r->optimizer = (nb_recipe_optimizer)o->optimizer;
  if (o->seed) r->seed = o->seed;
  if (r->steps < 1)
    return nb_error(NB_ERR_INVALID_ARG, "%s: a text model needs [train] steps (or --steps N)",
                    nb_model_source(m));
  r->epochs = 1;
  if (r->schedule == NB_SCHEDULE_WARMUP_COSINE && r->warmup >= r->steps) {
    /* a run shorter than its warm-up would never reach the peak */
    fprintf(log, "note: %lld steps are no more than the warm-up of %lld: cosine without warm-up\n",
            (long long)r->steps, (long long)r->warmup);
    r->warmup = 0;
  }
  return nb_recipe_schedule(r, r->steps, sched);
}

nb_status nb_fit_text(const nb_model *m, nb_backend *be, nb_state *st, const int32_t *tokens,
                      int64_t n, const nb_fit_options *opt, nb_text_fit_result *res) {
  if (!m || !be || !st || !tokens || !res)
    return nb_error(NB_ERR_INVALID_ARG, "nb_fit_text: model, backend, state, tokens and result "
                                        "are needed");
  memset(res, 0, sizeof *res);
  nb_fit_options o = opt ? *opt : nb_fit_defaults();
  FILE *log = o.log ? o.log : stdout;
  nb_recipe r;
  nb_schedule sched;
  nb_status rc = text_recipe(m, &o, log, &r, &sched);
  lm_graph tr, ev;
  memset(&tr, 0, sizeof tr);
  memset(&ev, 0, sizeof ev);
  nb_token_windows win;
  int32_t *bx = NULL, *by = NULL;
  nb_run_logs logs = {NULL, NULL};
  if (!rc) rc = check_tokens(m, tokens, n);
  /* micro-batches: the training step only; validation runs whole batches */
  nb_compile_options co = nb_compile_defaults(), eval_co = nb_compile_defaults();
  co.micro_batches = o.micro_batches > 1 ? o.micro_batches : 1;
  co.sequential = eval_co.sequential = o.sequential;
  if (!rc && r.batch % co.micro_batches)
    rc = nb_error(NB_ERR_INVALID_ARG,
                  "nb_fit_text: a batch of %d windows does not split into %d equal micro-batches; "
                  "use micro-batches that divide it or another batch size",
                  r.batch, co.micro_batches);
  if (!rc) rc = lm_build(m, &r, 1, r.batch, &co, be, st, &tr);
  if (!rc) rc = lm_build(m, &r, 0, r.batch, &eval_co, be, st, &ev);
  if (!rc) rc = nb_token_windows_init(&win, tokens, n, tr.ctx, r.seed);
  size_t bt = (size_t)(r.batch * tr.ctx);
  if (!rc && (!(bx = malloc(bt * sizeof *bx)) || !(by = malloc(bt * sizeof *by))))
    rc = nb_error(NB_ERR_OOM, "nb_fit_text: out of memory");

  int64_t step = 0;
  if (!rc && o.resume) {
    uint64_t plan_step = 0;
    rc = load_checkpoint(o.resume, st, r.batch, &win, &step, &plan_step);
    if (!rc) nb_plan_set_step(tr.plan, plan_step);
    if (!rc) fprintf(log, "resumed from %s at step %lld\n", o.resume, (long long)step);
  }
  if (!rc) rc = nb_run_logs_open(&logs, o.out_dir, o.resume != NULL, 5, log_cols);
  if (!rc) {
    char desc[256];
    char parts[64] = "";
    if (co.micro_batches > 1)
      snprintf(parts, sizeof parts, " in %d micro-batches", co.micro_batches);
    fprintf(log,
            "%lld steps of %d x %lld tokens%s, %s; validation every %lld steps over %d "
            "batches\n",
            (long long)r.steps, r.batch, (long long)tr.ctx, parts,
            nb_schedule_describe(&sched, desc, sizeof desc),
            (long long)(r.eval_every ? r.eval_every : r.steps), r.eval_batches);
  }

  int64_t last = o.stop_at > 0 && o.stop_at < r.steps ? o.stop_at : r.steps;
  int64_t trained = 0;
  double t_train = 0, lr = 0;
  res->val_loss = NAN;
  res->train_loss = NAN;
  while (!rc && step < last) {
    /* one segment: up to the next validation */
    int64_t end = last;
    if (r.eval_every > 0 && (step / r.eval_every + 1) * r.eval_every < end)
      end = (step / r.eval_every + 1) * r.eval_every;
    char label[64];
    snprintf(label, sizeof label, "step %lld-%lld/%lld", (long long)step + 1, (long long)end,
             (long long)r.steps);
    nb_progress *bar = NULL;
    rc = nb_progress_new(log, label, end - step, o.progress, &bar);
    if (!rc) rc = nb_progress_set_unit(bar, "tok", (double)bt);
    double loss_sum = 0, t0 = nb_run_clock();
    int64_t done = 0, first = step;
    while (!rc && step < end) {
      step++;
      lr = nb_schedule_lr(&sched, step);
      float l = 0;
      rc = nb_token_windows_next(&win, NB_TOKENS_TRAIN, r.batch, bx, by);
      if (!rc) rc = nb_optimizer_feed(tr.opt, tr.plan, step, (float)lr);
      if (!rc) rc = lm_run(&tr, bx, by, &l);
      if (!rc && !isfinite(l))
        rc = nb_error(NB_ERR_INVALID_ARG, "%s: the loss is %g at step %lld (try a lower lr)",
                      nb_model_source(m), (double)l, (long long)step);
      loss_sum += l;
      done = step - first;
      double avg = loss_sum / (double)done;
      const char *names[1] = {"loss"};
      if (!rc) rc = nb_progress_update(bar, done, 1, names, &avg);
    }
    if (bar) nb_progress_end(bar);
    nb_progress_free(bar);
    if (rc) break;
    double el = nb_run_clock() - t0, tps = el > 0 ? (double)done * (double)bt / el : 0;
    t_train += el;
    trained += done;
    res->train_loss = loss_sum / (double)(done ? done : 1);
    rc = eval_random(&ev, tokens, n, r.eval_batches, r.seed, bx, by, &res->val_loss);
    if (rc) break;
    fprintf(log, "step %lld/%lld  train loss %.4f  val loss %.4f  lr %.2e  %.0f tok/s\n",
            (long long)step, (long long)r.steps, res->train_loss, res->val_loss, lr, tps);
    if (r.precision == NB_PRECISION_FP16) {
      /* the grad scaler's state (optim.h), read once per validation */
      float scale = 0, skipped = 0;
      rc = nb_state_read(st, NB_GRAD_SCALER_SCALE, &scale, sizeof scale);
      if (!rc) rc = nb_state_read(st, NB_GRAD_SCALER_SKIPPED, &skipped, sizeof skipped);
      if (rc) break;
      res->loss_scale = scale;
      res->skipped_steps = (int64_t)skipped;
      fprintf(log, "fp16 loss scale %g, %lld of %lld steps skipped (gradient overflow)\n",
              (double)scale, (long long)res->skipped_steps, (long long)step);
    }
    fflush(log);
    rc = log_point(&logs, step, lr, res->train_loss, res->val_loss, tps);
    if (!rc && o.out_dir) {
      snprintf(res->checkpoint, sizeof res->checkpoint, "%s/checkpoint.safetensors", o.out_dir);
      rc = save_checkpoint(res->checkpoint, st, m, r.batch, step, nb_plan_step(tr.plan), &win);
    }
  }
  /* a resumed run that had nothing left still reports where it stands */
  if (!rc && isnan(res->val_loss))
    rc = eval_random(&ev, tokens, n, r.eval_batches, r.seed, bx, by, &res->val_loss);
  if (!rc && o.out_dir) {
    snprintf(res->weights, sizeof res->weights, "%s/weights.safetensors", o.out_dir);
    rc = nb_safetensors_save_if(res->weights, st, nb_run_keeps_model_var, NULL, NULL);
  }
  res->steps = step;
  res->seconds = t_train;
  res->tokens_per_sec = t_train > 0 ? (double)trained * (double)bt / t_train : 0;
  nb_run_logs_close(&logs);
  free(bx);
  free(by);
  lm_free(&tr);
  lm_free(&ev);
  return rc;
}
