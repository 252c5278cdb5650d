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
