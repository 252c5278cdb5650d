/* The training loop: one compiled plan per training step (forward, backward,
 * clipping, optimizer), eval plans that share the variables, per-epoch
 * evaluation, logs and checkpoints that resume bit for bit. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla/fit.h"
#include "fit_dist.h"
#include "run_logs.h"
#include "nabla/nabla.h"

nb_fit_options nb_fit_defaults(void) {
  nb_fit_options o;
  memset(&o, 0, sizeof o);
  o.device = "cpu";
  o.optimizer = -1;
  o.progress = NB_PROGRESS_AUTO;
  return o;
}

/* f16 training: the grad scaler's scale and skipped steps (optim.h), read
 * from the state once an epoch (no sync per step), into the result and a
 * log line. */
static nb_status loss_scale_report(const nb_state *st, FILE *log, int print, nb_fit_result *res) {
  float scale = 0, skipped = 0;
  nb_status rc = nb_state_read(st, NB_GRAD_SCALER_SCALE, &scale, sizeof scale);
  if (!rc) rc = nb_state_read(st, NB_GRAD_SCALER_SKIPPED, &skipped, sizeof skipped);
  if (rc) return rc;
  res->loss_scale = scale;
  res->skipped_steps = (int64_t)skipped;
  if (print)
    fprintf(log, "fp16 loss scale %g, %lld of %lld steps skipped (gradient overflow)\n",
            (double)scale, (long long)res->skipped_steps, (long long)res->steps);
  return NB_OK;
}

nb_status nb_recipe_normalize(const nb_recipe *r, nb_dataset *d) {
  if (!r || !d) return nb_error(NB_ERR_INVALID_ARG, "nb_recipe_normalize: NULL argument");
  if (r->norm_channels == 0) return NB_OK;
  int64_t channels = d->ndim >= 2 ? d->shape[0] : 1;
  if (r->norm_channels != 1 && r->norm_channels != channels)
    return nb_error(NB_ERR_SHAPE,
                    "the recipe normalises %d channels but the data has %lld (shape[0])",
                    r->norm_channels, (long long)channels);
  float mean[64], std[64];
  if (channels > 64) return nb_error(NB_ERR_UNSUPPORTED, "normalising more than 64 channels");
  for (int64_t c = 0; c < channels; c++) {
    mean[c] = r->mean[r->norm_channels == 1 ? 0 : c];
    std[c] = r->std[r->norm_channels == 1 ? 0 : c];
  }
  return nb_dataset_normalize(d, mean, std);
}

/* ---- graphs -------------------------------------------------------------------- */

typedef struct {
  nb_graph *g;
  nb_plan *plan;
  nb_tensor *x, *y, *loss, *correct, *pred, *norm;
  nb_optimizer *opt;
  int64_t batch;
} step_graph;

static void step_graph_free(step_graph *s) {
  nb_optimizer_free(s->opt);
  nb_plan_free(s->plan);
  nb_graph_free(s->g);
  memset(s, 0, sizeof *s);
}

/* The network with its loss. Train mode adds backward, clipping and the
 * optimizer; eval mode adds predictions. */
static nb_status build_step(const nb_model *m, const nb_recipe *r, int training, int64_t batch,
                            uint64_t seed, nb_backend *be, nb_state *st, nb_dist *dist,
                            const nb_compile_options *co, step_graph *s) {
  memset(s, 0, sizeof *s);
  s->batch = batch;
  s->g = nb_graph_new();
  if (!s->g) return nb_error(NB_ERR_OOM, "fit: out of memory");
  nb_graph *g = s->g;
  s->x = nb_model_new_input(m, g, "x", batch);
  s->y = nb_input(g, "labels", NB_I64, 1, &batch);
  nb_tensor_set_micro(s->y, NB_MICRO_SPLIT); /* with micro-batches: split like x */
  nb_nn nn = {.g = g,
              .training = training,
              .seed = seed,
              .init = NB_NN_INIT_TORCH,
              .recompute = training && r->recompute};
  nb_tensor *logits = NULL;
  nb_status rc = nb_graph_status(g);
  /* mixed precision: the network's matmuls and convolutions (autocast) */
  if (!rc) rc = nb_graph_set_autocast(g, nb_precision_dtype(r->precision));
  /* placed layers: the ones before the first placed layer run here, where
   * the batch is fed (nb_model_build); the loss follows the logits */
  if (!rc && nb_model_device_count(m)) rc = nb_graph_set_device(g, nb_backend_name(be));
  if (!rc) rc = nb_model_build(m, &nn, s->x, &logits);
  if (!rc) rc = nb_graph_set_device(g, NULL);
  if (!rc) rc = nb_graph_set_autocast(g, NB_F32);
  if (rc) return rc;
  if (nb_tensor_ndim(logits) != 2) { /* before cross_entropy, whose message names no layer */
    char got[128];
    return nb_error(NB_ERR_SHAPE,
                    "%s: the network outputs %s, but a classifier must output [batch, classes] "
                    "(a [flatten] before the first [linear]?)",
                    nb_model_source(m),
                    nb_shape_str(nb_tensor_ndim(logits), nb_tensor_shape(logits), got, sizeof got));
  }
  s->loss = nb_cross_entropy(g, logits, s->y, training ? r->label_smoothing : 0.0f);
  s->pred = nb_argmax(g, logits, 1, 0);
  s->correct =
      nb_sum(g, nb_eq(g, nb_cast(g, s->pred, NB_F32), nb_cast(g, s->y, NB_F32)), 0, NULL, 0);
  nb_tensor_set_output(s->loss);
  nb_tensor_set_output(s->correct);
  nb_tensor_set_micro(s->correct, NB_MICRO_SUM); /* hits of all micro-batches */
  if (!training) nb_tensor_set_output(s->pred);
  rc = nb_graph_status(g);
  if (rc) return nb_error(rc, "%s", nb_graph_error(g));
  if (training) rc = nb_recipe_update_dist(r, g, s->loss, dist, &s->norm, &s->opt);
  if (rc) return rc;
  return nb_compile(g, be, st, co, &s->plan);
}

static int64_t example_bytes(const nb_dataset *d) {
  return d->example_numel * (int64_t)sizeof(float);
}

/* Examples at .. at + s->batch - 1 of data as the plan's inputs. */
static nb_status stage_examples(step_graph *s, const nb_dataset *data, int64_t at) {
  int64_t b = s->batch;
  nb_status rc = nb_plan_set_input(s->plan, s->x, data->x + at * data->example_numel,
                                   (size_t)(b * example_bytes(data)));
  if (!rc) rc = nb_plan_set_input(s->plan, s->y, data->y + at, (size_t)b * sizeof(int64_t));
  return rc;
}

nb_status nb_evaluate(const nb_model *m, nb_backend *be, nb_state *st, const nb_dataset *data,
                      int64_t batch, nb_confusion *cm, double *loss) {
  if (!m || !be || !st || !data) return nb_error(NB_ERR_INVALID_ARG, "nb_evaluate: NULL argument");
  if (data->n == 0) return nb_error(NB_ERR_INVALID_ARG, "nb_evaluate: the dataset is empty");
  if (batch <= 0) batch = 500;
  if (batch > data->n) batch = data->n;
  nb_recipe r = *nb_model_recipe(m);
  /* one plan for full batches and, if needed, one for the remainder */
  step_graph full, tail;
  memset(&tail, 0, sizeof tail);
  nb_status rc = build_step(m, &r, 0, batch, r.seed, be, st, NULL, NULL, &full);
  int64_t rem = data->n % batch;
  if (!rc && rem) rc = build_step(m, &r, 0, rem, r.seed, be, st, NULL, NULL, &tail);
  double total = 0;
  int64_t *pred = malloc((size_t)batch * sizeof *pred);
  if (!rc && !pred) rc = nb_error(NB_ERR_OOM, "nb_evaluate: out of memory");
  int staged = 0; /* the batch at `at` was uploaded during the run before */
  for (int64_t at = 0; !rc && at < data->n;) {
    step_graph *s = data->n - at >= batch ? &full : &tail;
    int64_t b = s->batch, next = at + b;
    if (!staged) rc = stage_examples(s, data, at);
    if (!rc) rc = nb_plan_run(s->plan);
    /* the next batch uploads while this one runs (an asynchronous device) */
    staged = 0;
    if (!rc && next < data->n) {
      rc = stage_examples(data->n - next >= batch ? &full : &tail, data, next);
      staged = !rc;
    }
    float l = 0;
    if (!rc) rc = nb_plan_get(s->plan, s->loss, &l, sizeof l);
    if (!rc) rc = nb_plan_get(s->plan, s->pred, pred, (size_t)b * sizeof *pred);
    if (!rc && cm) rc = nb_confusion_add(cm, pred, data->y + at, b);
    total += (double)l * (double)b;
    at = next;
  }
  if (!rc && loss) *loss = total / (double)data->n;
  free(pred);
  step_graph_free(&full);
  step_graph_free(&tail);
  return rc;
}

/* ---- logs and checkpoints ----------------------------------------------------------- */

static nb_status save_checkpoint(const char *path, const nb_state *st, const nb_model *m,
                                 int64_t batch, int64_t step, int64_t epoch, uint64_t plan_step,
                                 const nb_loader_pos *pos) {
  nb_kv *kv = NULL;
  nb_status rc = nb_kv_new(&kv);
  if (!rc) rc = nb_kv_set_i64(kv, NB_CKPT_STEP, step);
  if (!rc) rc = nb_kv_set_i64(kv, NB_CKPT_BATCH, batch);
  if (!rc) rc = nb_kv_set_i64(kv, NB_CKPT_EPOCH, epoch);
  if (!rc) rc = nb_kv_set_i64(kv, NB_CKPT_PLAN_STEP, (int64_t)plan_step);
  if (!rc) rc = nb_kv_set_i64(kv, "loader_epoch", pos->epoch);
  if (!rc) rc = nb_kv_set_i64(kv, "loader_batch", pos->batch);
  if (!rc) rc = nb_kv_set_rng(kv, "loader_rng", &pos->rng);
  if (!rc) rc = nb_kv_set(kv, NB_CKPT_MODEL, nb_model_source(m));
  if (!rc) rc = nb_checkpoint_save(path, st, kv);
  nb_kv_free(kv);
  return rc;
}

typedef struct {
  int64_t step, epoch;
  uint64_t plan_step;
  nb_loader_pos pos;
} resume_point;

static nb_status load_checkpoint(const char *path, nb_state *st, int64_t batch, resume_point *rp) {
  nb_kv *kv = NULL;
  nb_status rc = nb_checkpoint_load(path, st, 0, &kv);
  if (rc) return nb_run_resume_error(rc, path);
  rc = nb_run_check_batch(kv, path, batch, "examples");
  if (rc) {
    nb_kv_free(kv);
    return rc;
  }
  int64_t plan_step = 0;
  rc = nb_kv_get_i64(kv, NB_CKPT_STEP, &rp->step);
  if (!rc) rc = nb_kv_get_i64(kv, NB_CKPT_EPOCH, &rp->epoch);
  if (!rc) rc = nb_kv_get_i64(kv, NB_CKPT_PLAN_STEP, &plan_step);
  if (!rc) rc = nb_kv_get_i64(kv, "loader_epoch", &rp->pos.epoch);
  if (!rc) rc = nb_kv_get_i64(kv, "loader_batch", &rp->pos.batch);
  if (!rc) rc = nb_kv_get_rng(kv, "loader_rng", &rp->pos.rng);
  rp->plan_step = (uint64_t)plan_step;
  nb_kv_free(kv);
  if (rc) return nb_error(rc, "resume from %s: %s", path, nb_last_error());
  return NB_OK;
}

/* the columns of log.csv */
static const char *const log_cols[] = {"epoch",         "step",           "lr",
                                       "train_loss",    "train_accuracy", "test_loss",
                                       "test_accuracy", "images_per_sec"};

/* ---- fit ------------------------------------------------------------------------- */

/* The loader's next batch of `epoch`, uploaded as the step's inputs. */
static nb_status stage_batch(nb_loader *loader, int64_t epoch, step_graph *s, int64_t local,
                             const nb_dataset *train) {
  nb_batch batch;
  nb_status rc = nb_loader_next(loader, &batch);
  if (rc) return rc;
  if (batch.epoch != epoch)
    return nb_error(NB_ERR_INTERNAL, "fit: loader at epoch %lld, trainer at %lld",
                    (long long)batch.epoch, (long long)epoch);
  rc = nb_plan_set_input(s->plan, s->x, batch.x, (size_t)(local * example_bytes(train)));
  if (!rc) rc = nb_plan_set_input(s->plan, s->y, batch.y, (size_t)local * sizeof(int64_t));
  return rc;
}

static nb_recipe effective_recipe(const nb_model *m, const nb_fit_options *o) {
  nb_recipe r = *nb_model_recipe(m);
  if (o->epochs > 0) r.epochs = o->epochs;
  if (o->batch > 0) r.batch = (int)o->batch;
  if (o->lr > 0) r.lr = o->lr;
  if (o->optimizer >= 0) r.optimizer = (nb_recipe_optimizer)o->optimizer;
  if (o->seed) r.seed = o->seed;
  return r;
}

nb_status nb_fit(const nb_model *m, nb_backend *be, nb_state *st, const nb_dataset *train,
                 const nb_dataset *test, const nb_fit_options *opt, nb_fit_result *res) {
  if (!m || !be || !st || !train || !res)
    return nb_error(NB_ERR_INVALID_ARG, "nb_fit: model, backend, state, data and result needed");
  nb_fit_options o = opt ? *opt : nb_fit_defaults();
  FILE *log = o.log ? o.log : stdout;
  memset(res, 0, sizeof *res);
  nb_recipe r = effective_recipe(m, &o);
  /* data-parallel: the ranks agree on the run before anything else, and from
   * then on meet at the same collectives (fit_dist.c, docs/distributed.md) */
  nb_dist *dist = o.dist;
  const int ranks = nb_dist_size(dist), lead = nb_dist_rank(dist) == 0;
  nb_status agreed = nb_fit_dist_check_config(dist, &r, train, test, o.resume != NULL);
  if (agreed) return agreed;
  const int64_t local = r.batch / ranks; /* this rank's part of every batch */
  /* model parallelism: micro-batches of the rank's part (1F1B) */
  nb_compile_options co = nb_compile_defaults();
  co.micro_batches = o.micro_batches > 1 ? o.micro_batches : 1;
  co.sequential = o.sequential;
  if (ranks > 1 && (co.micro_batches > 1 || nb_model_device_count(m) > 0))
    return nb_error(NB_ERR_UNSUPPORTED, "nb_fit: model parallelism (placed layers, "
                                        "micro-batches) and data-parallel training do not "
                                        "combine yet");
  if (local % co.micro_batches) {
    int below = co.micro_batches, above = co.micro_batches; /* the nearest that work */
    while (local % below) below--;
    while (above <= local && local % above) above++;
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_fit: a batch of %lld does not split into %d equal micro-batches; use "
                    "micro-batches that divide it (%d%s%.0d) or another batch size",
                    (long long)local, co.micro_batches, below, above <= local ? " or " : "",
                    above <= local ? above : 0);
  }
  if (train->n < r.batch)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_fit: %lld training examples, fewer than one batch of %d",
                    (long long)train->n, r.batch);

  nb_loader_options lo = nb_loader_defaults(r.batch);
  lo.drop_last = 1;
  lo.seed = r.seed;
  lo.augment.crop_pad = r.crop_padding;
  lo.augment.hflip = r.hflip;
  lo.shards = ranks;
  lo.shard = nb_dist_rank(dist);
  nb_loader *loader = NULL;
  step_graph s;
  memset(&s, 0, sizeof s);
  nb_run_logs logs;
  memset(&logs, 0, sizeof logs);
  nb_progress *bar = NULL;
  nb_schedule sched;
  nb_status rc = nb_loader_new(train, &lo, &loader);
  int64_t per_epoch = loader ? nb_loader_batches_per_epoch(loader) : 0;
  if (!rc) rc = nb_recipe_schedule(&r, per_epoch, &sched);
  /* each rank its own dropout masks (its initial weights are replaced by
   * rank 0's below); with the same seed every rank would drop the same
   * positions of its part of the batch */
  uint64_t seed = r.seed + (uint64_t)nb_dist_rank(dist) * 0x9e3779b97f4a7c15ull;
  if (!rc) rc = build_step(m, &r, 1, local / co.micro_batches, seed, be, st, dist, &co, &s);
  rc = nb_dist_agree(dist, rc);
  if (!rc) rc = nb_fit_dist_check_graph(dist, s.g, st);

  resume_point rp = {0, 0, 0, {0, 0, {{0}}}};
  if (!rc && o.resume) {
    /* rank 0 reads the checkpoint; the others get its position here and
     * its variables below, so only rank 0 needs the file */
    if (lead) rc = load_checkpoint(o.resume, st, r.batch, &rp);
    rc = nb_dist_agree(dist, rc);
    if (!rc && ranks > 1) rc = nb_dist_broadcast(dist, &rp, sizeof rp, 0);
    if (!rc) rc = nb_loader_set_pos(loader, &rp.pos);
    if (!rc) nb_plan_set_step(s.plan, rp.plan_step);
    /* nothing left to train would report a result of zeros */
    if (!rc && rp.epoch >= r.epochs)
      rc = nb_error(NB_ERR_INVALID_ARG,
                    "resume from %s: it has trained %lld epochs already, the run asks for %d; "
                    "ask for more epochs to go on",
                    o.resume, (long long)rp.epoch, r.epochs);
    if (!rc && lead)
      fprintf(log, "resumed from %s: epoch %lld, step %lld\n", o.resume, (long long)rp.epoch,
              (long long)rp.step);
  }
  /* rank 0's variables, initial or resumed, on every rank */
  if (!rc) rc = nb_fit_dist_broadcast_state(dist, st);
  if (!rc && lead) rc = nb_run_logs_open(&logs, o.out_dir, o.resume != NULL, 8, log_cols);
  rc = nb_dist_agree(dist, rc);

  int64_t step = rp.step;
  double t_train = 0;
  int64_t images = 0;
  for (int64_t epoch = rp.epoch; !rc && epoch < r.epochs; epoch++) {
    char label[64];
    snprintf(label, sizeof label, "epoch %lld/%d", (long long)epoch + 1, r.epochs);
    rc = nb_progress_new(log, label, per_epoch, lead ? o.progress : NB_PROGRESS_OFF, &bar);
    if (!rc) rc = nb_progress_set_unit(bar, "img", (double)r.batch);
    double loss_sum = 0, hits = 0, lr = 0, t0 = nb_run_clock();
    int64_t done = 0;
    int staged = 0; /* batch b was uploaded during step b - 1 */
    for (int64_t b = 0; !rc && b < per_epoch; b++) {
      if (!staged) rc = stage_batch(loader, epoch, &s, local, train);
      staged = 0;
      if (rc) break;
      step++;
      lr = nb_schedule_lr(&sched, step);
      rc = nb_optimizer_feed(s.opt, s.plan, step, (float)lr);
      if (!rc) rc = nb_plan_run(s.plan);
      /* On an asynchronous device (CUDA) the run is only queued: load and
       * upload the next batch now, while it runs (the upload lands after its
       * kernels). Not past the epoch's end, whose loader position a
       * checkpoint records. */
      if (!rc && b + 1 < per_epoch) {
        rc = stage_batch(loader, epoch, &s, local, train);
        staged = !rc;
      }
      float l = 0, c = 0;
      if (!rc) rc = nb_plan_get(s.plan, s.loss, &l, sizeof l);
      /* diverged: stop before garbage weights overwrite the last checkpoint
       * (fp16's loss scaler skips the steps whose loss overflowed) */
      if (!rc && !isfinite(l) && r.precision != NB_PRECISION_FP16)
        rc = nb_error(NB_ERR_STATE,
                      "training diverged: the loss is %g at epoch %lld, batch %lld; the last "
                      "checkpoint is left as it was (try a lower --lr, or clip_grad_norm in "
                      "[train])",
                      (double)l, (long long)epoch + 1, (long long)b + 1);
      if (!rc) rc = nb_plan_get(s.plan, s.correct, &c, sizeof c);
      loss_sum += l;
      hits += c;
      done = b + 1;
      double avg = loss_sum / (double)done, acc = hits / (double)(done * local);
      const char *names[2] = {"loss", "acc"};
      double vals[2] = {avg, acc};
      if (!rc) rc = nb_progress_update(bar, done, 2, names, vals);
    }
    if (bar) nb_progress_end(bar);
    nb_progress_free(bar);
    bar = NULL;
    if (rc) break;
    double el = nb_run_clock() - t0;
    t_train += el;
    images += done * r.batch;
    if (ranks > 1) {
      /* the whole batches': the mean of the ranks' mean losses, all hits */
      double sums[2] = {loss_sum / ranks, hits};
      rc = nb_dist_allreduce_f64(dist, sums, 2, NB_DIST_SUM);
      loss_sum = sums[0];
      hits = sums[1];
      if (!rc) rc = nb_fit_dist_sync_buffers(dist, s.g, st);
      if (!rc) rc = nb_fit_dist_check_weights(dist, s.g, st, epoch + 1);
      if (rc) break;
    }
    res->train_loss = loss_sum / (double)(done ? done : 1);
    res->train_accuracy = hits / (double)(done ? done * r.batch : 1);
    res->test_loss = res->test_accuracy = 0;
    if (test) {
      nb_confusion *cm = NULL;
      rc = nb_confusion_new((int)nb_model_classes(m), &cm);
      if (!rc) rc = nb_evaluate_dist(m, be, st, test, o.eval_batch, dist, cm, &res->test_loss);
      if (!rc) res->test_accuracy = nb_confusion_accuracy(cm);
      nb_confusion_free(cm);
      if (rc) break;
    }
    res->epochs = (int)epoch + 1;
    res->steps = step;
    if (r.precision == NB_PRECISION_FP16) rc = loss_scale_report(st, log, lead, res);
    if (rc) break;
    if (lead)
      fprintf(
          log,
          "epoch %lld/%d  train loss %.4f  acc %.4f  |  test loss %.4f  acc %.4f  |  %.0f img/s\n",
          (long long)epoch + 1, r.epochs, res->train_loss, res->train_accuracy, res->test_loss,
          res->test_accuracy, (double)(done * r.batch) / el);
    fflush(log);
    if (logs.tb) {
      rc = nb_tb_scalar(logs.tb, "train/loss", step, (float)res->train_loss);
      if (!rc) rc = nb_tb_scalar(logs.tb, "train/accuracy", step, (float)res->train_accuracy);
      if (!rc && test) rc = nb_tb_scalar(logs.tb, "test/loss", step, (float)res->test_loss);
      if (!rc && test) rc = nb_tb_scalar(logs.tb, "test/accuracy", step, (float)res->test_accuracy);
      if (!rc) rc = nb_tb_scalar(logs.tb, "lr", step, (float)lr);
      if (!rc && r.precision == NB_PRECISION_FP16)
        rc = nb_tb_scalar(logs.tb, "train/loss_scale", step, (float)res->loss_scale);
      if (!rc) rc = nb_tb_flush(logs.tb);
    }
    if (!rc && logs.csv) {
      double row[8] = {(double)epoch + 1,
                       (double)step,
                       lr,
                       res->train_loss,
                       res->train_accuracy,
                       res->test_loss,
                       res->test_accuracy,
                       (double)(done * r.batch) / el};
      rc = nb_csvlog_row(logs.csv, row, 8);
    }
    if (!rc && lead && o.out_dir) {
      nb_loader_pos pos;
      rc = nb_loader_get_pos(loader, &pos);
      snprintf(res->checkpoint, sizeof res->checkpoint, "%s/checkpoint.safetensors", o.out_dir);
      if (!rc)
        rc = save_checkpoint(res->checkpoint, st, m, r.batch, step, epoch + 1, nb_plan_step(s.plan),
                             &pos);
    }
    rc = nb_dist_agree(dist, rc); /* rank 0's logs and checkpoint */
  }
  if (!rc) {
    if (lead && o.out_dir) {
      snprintf(res->weights, sizeof res->weights, "%s/weights.safetensors", o.out_dir);
      rc = nb_safetensors_save_if(res->weights, st, nb_run_keeps_model_var, NULL, NULL);
    }
    rc = nb_dist_agree(dist, rc);
  }
  res->seconds = t_train;
  res->images_per_sec = t_train > 0 ? (double)images / t_train : 0;
  if (!res->epochs) res->epochs = (int)rp.epoch;
  if (!res->steps) res->steps = step;
  nb_run_logs_close(&logs);
  step_graph_free(&s);
  nb_loader_free(loader);
  return rc;
}
