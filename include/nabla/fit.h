/* nabla training loop: fit a model file's network to a dataset with its
 * recipe, evaluate it, and resume exactly from a checkpoint. Built on the
 * layers below it (model files, data loaders, optimizers, checkpoints,
 * TensorBoard and CSV logs, metrics, progress). */
#ifndef NABLA_FIT_H
#define NABLA_FIT_H

#include <stdio.h>

#include "data.h"
#include "io.h"
#include "model.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_fit_options {
  const char *device;  /* "cpu" (default) */
  int epochs;          /* > 0 overrides the recipe's epochs */
  int64_t batch;       /* > 0 overrides the recipe's batch size */
  float lr;            /* > 0 overrides the recipe's (peak) learning rate */
  int optimizer;       /* -1: the recipe's; else an nb_recipe_optimizer */
  uint64_t seed;       /* 0: the recipe's seed */
  int64_t eval_batch;  /* evaluation batch size; 0 = 500 */
  const char *out_dir; /* checkpoints, weights, TensorBoard and CSV logs; NULL: none */
  const char *resume;  /* checkpoint to continue from, or NULL */
  nb_progress_mode progress;
  FILE *log; /* progress and epoch lines; NULL = stdout */
  /* Data-parallel training (dist.h, docs/distributed.md): NULL or one rank
   * trains alone. With N ranks, batch is the global batch (divisible by N):
   * each rank trains on its B/N part of every batch, gradients are averaged
   * in the step, rank 0 alone prints and writes files, and evaluation is
   * split across ranks. Every rank calls nb_fit with the same arguments. */
  nb_dist *dist;
  /* text models (nb_fit_text) */
  int64_t steps;      /* > 0 overrides the recipe's steps */
  int64_t eval_every; /* > 0 overrides the recipe's eval_every */
  int64_t stop_at;    /* > 0: pause after this step (checkpoint and all), the schedule still
                         spanning `steps`; a later --resume continues the same run */
  /* Model parallelism (docs/distributed.md): a model whose layers are placed
   * (nb_model_set_placement, `device` keys) trains over those devices. */
  int micro_batches; /* > 1: split every batch into this many micro-batches (1F1B; the
                        batch must divide); gradients are averaged, one update per batch */
  int sequential;    /* 1: run the devices one after another on one thread (reference) */
} nb_fit_options;

/* device "cpu", every override off, eval batch 500, progress AUTO. */
nb_fit_options nb_fit_defaults(void);

typedef struct nb_fit_result {
  int epochs;            /* epochs completed in total */
  int64_t steps;         /* optimizer steps completed in total */
  double train_loss;     /* mean loss over the last epoch's batches */
  double train_accuracy; /* over the last epoch's batches */
  double test_loss;      /* on the test set after the last epoch */
  double test_accuracy;
  double images_per_sec; /* training throughput of this run */
  double seconds;        /* training time of this run (evaluation excluded) */
  char checkpoint[1024]; /* last checkpoint written ("" if none) */
  char weights[1024];    /* model weights written at the end ("" if none) */
  /* precision fp16: the grad scaler's scale and the steps it skipped so far
   * (gradient overflow), at the end; 0 otherwise */
  double loss_scale;
  int64_t skipped_steps;
} nb_fit_result;

/* Trains `m` on `train` (features already normalised as the recipe says),
 * evaluating on `test` (may be NULL) after every epoch. Training batches
 * are shuffled with the seed; the last partial batch of an epoch is
 * dropped, so one compiled plan serves every step. With out_dir set, writes
 * after each epoch a checkpoint (every variable, optimizer state, step,
 * epoch, loader position: `--resume` continues bit for bit), and at the
 * end weights.safetensors (model variables only), plus TensorBoard events
 * and log.csv. `st` holds the variables (created on first use; pass a fresh
 * state, or one with weights to fine-tune); it must belong to a backend of
 * o->device. The recipe's precision (nb_model_set_precision) applies to
 * the training and the evaluation graphs; with fp16 each epoch logs the
 * loss scale and the skipped steps (nb_fit_result). */
nb_status nb_fit(const nb_model *m, nb_backend *be, nb_state *st, const nb_dataset *train,
                 const nb_dataset *test, const nb_fit_options *o, nb_fit_result *r);

/* Evaluates the variables in `st` on `data` in eval mode: mean
 * cross-entropy into *loss (may be NULL) and every prediction into `cm`
 * (may be NULL). */
nb_status nb_evaluate(const nb_model *m, nb_backend *be, nb_state *st, const nb_dataset *data,
                      int64_t batch, nb_confusion *cm, double *loss);
/* nb_evaluate with the examples split across the ranks of `dist` (every
 * rank calls it; NULL: one process): each rank evaluates a contiguous
 * shard, and every rank receives the loss and the counts over all of data. */
nb_status nb_evaluate_dist(const nb_model *m, nb_backend *be, nb_state *st, const nb_dataset *data,
                           int64_t batch, nb_dist *dist, nb_confusion *cm, double *loss);

/* ---- language models on text (src/train/fit_text.c) ---------------------- */

typedef struct nb_text_fit_result {
  int64_t steps;         /* optimizer steps completed in total */
  double train_loss;     /* mean loss (nats per token) over the steps since the last validation */
  double val_loss;       /* mean loss (nats per token) on the validation windows, at the end */
  double tokens_per_sec; /* training throughput of this run (validation excluded) */
  double seconds;        /* training time of this run (validation excluded) */
  char checkpoint[1024]; /* last checkpoint written ("" if none) */
  char weights[1024];    /* model weights written at the end ("" if none) */
  double loss_scale;     /* precision fp16: as in nb_fit_result; 0 otherwise */
  int64_t skipped_steps;
} nb_text_fit_result;

/* Trains a token-sequence model (nb_model_is_text: input [T] token ids,
 * output [batch, T, vocab]) to predict the next token, nanoGPT's way:
 * tokens[0..n) are split 90/10 (nb_token_windows); each step takes `batch`
 * random windows of T + 1 tokens from the first 90% and minimises the mean
 * cross-entropy of every position's next token. The run lasts the recipe's
 * `steps` (o->steps overrides) with its schedule over those steps (a
 * warm-up as long as the run is dropped). Every eval_every steps and at the
 * end the validation loss is the mean over eval_batches batches of windows
 * from the last 10% (the same windows every time, drawn from the seed). On a
 * TTY a progress bar runs between validations, plain lines otherwise. With
 * out_dir set, each validation writes checkpoint.safetensors (variables,
 * step, dropout step and the window generator: o->resume continues bit for
 * bit), TensorBoard events and log.csv rows, and the end writes
 * weights.safetensors (model variables only). Token ids must be below the
 * model's vocabulary. `st` as for nb_fit. */
nb_status nb_fit_text(const nb_model *m, nb_backend *be, nb_state *st, const int32_t *tokens,
                      int64_t n, const nb_fit_options *o, nb_text_fit_result *r);

/* The mean next-token loss (nats per token) of the variables in `st` on the
 * validation part (last 10%) of tokens[0..n): `batches` batches of `batch`
 * random windows drawn from `seed`, or, with batches = 0, every
 * non-overlapping window of the validation part in order (the last partial
 * batch too). The state must already hold the model's variables. */
nb_status nb_evaluate_text(const nb_model *m, nb_backend *be, nb_state *st, const int32_t *tokens,
                           int64_t n, int64_t batch, int batches, uint64_t seed, double *loss);

/* Normalises a dataset in place with the recipe's mean/std (no-op when the
 * recipe has none). */
nb_status nb_recipe_normalize(const nb_recipe *r, nb_dataset *d);

#ifdef __cplusplus
}
#endif

#endif
