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
 * o->device. */
nb_status nb_fit(const nb_model *m, nb_backend *be, nb_state *st, const nb_dataset *train,
                 const nb_dataset *test, const nb_fit_options *o, nb_fit_result *r);

/* Evaluates the variables in `st` on `data` in eval mode: mean
 * cross-entropy into *loss (may be NULL) and every prediction into `cm`
 * (may be NULL). */
nb_status nb_evaluate(const nb_model *m, nb_backend *be, nb_state *st, const nb_dataset *data,
                      int64_t batch, nb_confusion *cm, double *loss);

/* Normalises a dataset in place with the recipe's mean/std (no-op when the
 * recipe has none). */
nb_status nb_recipe_normalize(const nb_recipe *r, nb_dataset *d);

#ifdef __cplusplus
}
#endif

#endif
