/* The trainers' shared logs, clock and weights filter (run_logs.h). */
#define _POSIX_C_SOURCE 200809L
#include "run_logs.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

nb_status nb_run_logs_open(nb_run_logs *l, const char *dir, int resuming, int n,
                           const char *const *cols) {
  memset(l, 0, sizeof *l);
  if (!dir) return NB_OK;
  nb_status rc = nb_mkdirs(dir);
  char path[1024];
  if (!rc) rc = nb_tb_open(dir, &l->tb);
  snprintf(path, sizeof path, "%s/log.csv", dir);
  if (!rc) rc = nb_csvlog_open(path, n, cols, resuming ? NB_CSVLOG_APPEND : 0, &l->csv);
  return rc;
}

void nb_run_logs_close(nb_run_logs *l) {
  if (l->tb) nb_tb_close(l->tb);
  if (l->csv) nb_csvlog_close(l->csv);
  l->tb = NULL;
  l->csv = NULL;
}

double nb_run_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int nb_run_keeps_model_var(const char *name, void *ctx) {
  (void)ctx;
  return !nb_optimizer_owns(name);
}

nb_status nb_run_resume_error(nb_status rc, const char *path) {
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", nb_last_error());
  const char *m = msg;
  size_t n = strlen(path);
  if (!strncmp(m, path, n) && !strncmp(m + n, ": ", 2)) m += n + 2; /* said once below */
  int mismatch = rc == NB_ERR_SHAPE || (rc == NB_ERR_FORMAT && strstr(m, "in the state"));
  return nb_error(rc, "resume from %s: %s%s", path, m,
                  mismatch ? " (resume with the model file, optimizer and LoRA flags the run "
                             "started with)"
                           : "");
}

nb_status nb_run_check_batch(const nb_kv *kv, const char *path, int64_t batch, const char *unit) {
  int64_t saved = 0;
  if (!nb_kv_get(kv, NB_CKPT_BATCH)) return NB_OK; /* written before the key existed */
  nb_status rc = nb_kv_get_i64(kv, NB_CKPT_BATCH, &saved);
  if (rc) return nb_error(rc, "resume from %s: %s", path, nb_last_error());
  if (saved != batch)
    return nb_error(NB_ERR_INVALID_ARG,
                    "resume from %s: it was trained with batches of %lld %s, this run asks for "
                    "%lld; give --batch %lld (or no --batch) to continue it exactly",
                    path, (long long)saved, unit, (long long)batch, (long long)saved);
  return NB_OK;
}
