/* What nb_fit (fit.c) and nb_fit_text (fit_text.c) share around their
 * loops: the run's TensorBoard events and CSV log in --out, the wall clock
 * they time steps with, and which variables the final weights file keeps. */
#ifndef NB_TRAIN_RUN_LOGS_H
#define NB_TRAIN_RUN_LOGS_H

#include "nabla/nabla.h"

typedef struct nb_run_logs {
  nb_tb_writer *tb; /* NULL without an output folder */
  nb_csvlog *csv;
} nb_run_logs;

/* Opens dir/events.out.tfevents.* and dir/log.csv with the n named columns
 * (appended to when resuming), creating dir; nothing when dir is NULL. */
nb_status nb_run_logs_open(nb_run_logs *l, const char *dir, int resuming, int n,
                           const char *const *cols);
void nb_run_logs_close(nb_run_logs *l);

/* Seconds on a monotonic clock. */
double nb_run_clock(void);

/* nb_safetensors_save_if's filter for weights files: the model's
 * variables, not the optimizer's. */
int nb_run_keeps_model_var(const char *name, void *ctx);

#endif
