/* `nabla train` and `nabla eval` for token-sequence (text) models: the
 * settings cmd_train.c parsed, handed to cmd_text.c. */
#ifndef NABLA_CMD_TEXT_H
#define NABLA_CMD_TEXT_H

#include <stdint.h>

#include "nabla/nabla.h"

typedef struct nabla_text_args {
  const char *model, *weights; /* eval: WEIGHTS */
  const char *data, *dataset;  /* --data (a text file or a folder), --dataset NAME */
  const char *out, *resume, *device;
  int json, optimizer; /* optimizer: -1 = the recipe's */
  int64_t steps, eval_every, batch;
  float lr;
  uint64_t seed;
  const char *init_from; /* weights to start from, or NULL (cmd_lora.h) */
  int micro_batches;     /* train: > 1 splits each batch (gradient accumulation, pipelines) */
  int device_threads;    /* train: threads of each CPU device (> 0) */
} nabla_text_args;

/* Trains the text model m on the data's characters; returns the exit code. */
int nabla_text_train(nb_model *m, const nabla_text_args *a);
/* Validation loss of WEIGHTS over the whole validation part of the text. */
int nabla_text_eval(nb_model *m, const nabla_text_args *a);

#endif
