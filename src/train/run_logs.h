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

/* The error of a failed resume from checkpoint `path` (status rc, message
 * nb_last_error()): "resume from PATH: ..." without saying the path twice,
 * and, when the checkpoint's variables do not match the run's, what to do
 * about it. Returns rc. */
nb_status nb_run_resume_error(nb_status rc, const char *path);

/* Checks the checkpoint's batch (NB_CKPT_BATCH, absent in older files)
 * against this run's: another batch size would quietly continue with
 * another data order and schedule. `unit` names what a batch counts. */
nb_status nb_run_check_batch(const nb_kv *kv, const char *path, int64_t batch, const char *unit);

/* Seconds on a monotonic clock. */
double nb_run_clock(void);

/* nb_safetensors_save_if's filter for weights files: the model's
 * variables, not the optimizer's. */
int nb_run_keeps_model_var(const char *name, void *ctx);

#endif
