/* `nabla train` across processes (cmd_dist.h, docs/distributed.md). */
#include <stdio.h>
#include <stdlib.h>

#include "cmd_dist.h"

/* Ranks sharing this machine, as the launcher tells (0 when unknown). */
static int local_ranks(void) {
  static const char *const names[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
                                      "PMI_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    const char *v = getenv(names[i]);
    if (v && atoi(v) > 0) return atoi(v);
  }
  return 0;
}

nb_status nabla_dist_open(int forced, int threads, nb_dist **out) {
  nb_status rc = nb_dist_init(forced ? NB_DIST_MPI : NB_DIST_AUTO, out);
  if (rc) {
    if (forced) return nb_error(rc, "--distributed: %s", nb_last_error());
    return rc;
  }
  int local = local_ranks();
  if (threads == 0 && nb_dist_size(*out) > 1 && local > 1) {
    /* nb_get_num_threads() is the cores this process may use (its
     * affinity mask): all of the machine's, or one when mpirun bound the
     * rank to a core */
    int t = nb_get_num_threads() / local;
    nb_set_num_threads(t > 0 ? t : 1);
  }
  return NB_OK;
}

int nabla_dist_fail(nb_dist *d, const char *cmd) {
  char msg[1200];
  if (nb_dist_size(d) > 1)
    snprintf(msg, sizeof msg, "nabla %s: rank %d/%d: %s", cmd, nb_dist_rank(d), nb_dist_size(d),
             nb_last_error());
  else
    snprintf(msg, sizeof msg, "nabla %s: %s", cmd, nb_last_error());
  fprintf(stderr, "%s\n", msg);
  if (nb_dist_size(d) > 1 && !nb_dist_failed_together(d)) nb_dist_abort(d, 1, NULL);
  return 1;
}
