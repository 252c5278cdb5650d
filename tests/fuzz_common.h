/* What every fuzz target shares (tests/fuzz_targets.h, fuzz_io.h,
 * fuzz_data.h, fuzz_model.h): the counters a run reports, the check of a
 * reader's error, and the CPU backend. */
#ifndef NB_FUZZ_COMMON_H
#define NB_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/nabla.h"

typedef struct fz_stats {
  long inputs, parsed, built, compiled;
} fz_stats;

/* A reader's verdict on one input: 0 if fine, else what went wrong (the
 * caller reports it with the input that caused it). `name` (may be NULL)
 * must appear in the message: the file the error is about. */
static const char *fz_check_error(nb_status st, const char *name) {
  const char *msg = nb_last_error();
  if (st == NB_ERR_INTERNAL) return "NB_ERR_INTERNAL (a bug, not a bad file)";
  if (!msg[0]) return "an error without a message";
  if (name && !strstr(msg, name) && st != NB_ERR_OOM)
    return "an error message without the file name";
  return NULL;
}

static nb_backend *fz_cpu(void) {
  static nb_backend *be;
  if (!be && nb_backend_new("cpu", &be)) return NULL;
  return be;
}

#endif
