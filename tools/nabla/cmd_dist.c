/* `nabla train` across processes (cmd_dist.h, docs/distributed.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* This process's rank among those of its machine, as the launcher tells
 * (-1 when unknown). */
static int local_rank(void) {
  static const char *const names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                      "PMI_LOCAL_RANK", "SLURM_LOCALID"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    const char *v = getenv(names[i]);
    if (v && *v >= '0' && *v <= '9') return atoi(v);
  }
  return -1;
}

nb_status nabla_dist_open(int forced, int threads, nb_dist **out) {
  /* NABLA_DIST=self: --distributed without a launcher is one process that
   * still averages its gradients in the step (NCCL on CUDA), to run and
   * test that path where there is no MPI */
  const char *want = getenv("NABLA_DIST");
  int self = forced && want && !strcmp(want, "self") && !nb_dist_launched();
  nb_status rc = nb_dist_init(self ? NB_DIST_SELF : forced ? NB_DIST_MPI : NB_DIST_AUTO, out);
  if (rc) {
    if (forced && !nb_dist_launched())
      return nb_error(rc,
                      "--distributed: %s (NABLA_DIST=self runs one process through the "
                      "distributed code path instead)",
                      nb_last_error());
    if (forced) return nb_error(rc, "--distributed: %s", nb_last_error());
    return rc;
  }
  int local = local_ranks();
  if (threads == 0 && !getenv("OMP_NUM_THREADS") && nb_dist_size(*out) > 1 && local > 1) {
    /* nb_get_num_threads() is the cores this process may use (its
     * affinity mask): all of the machine's, or one when mpirun bound the
     * rank to a core */
    int t = nb_get_num_threads() / local;
    nb_set_num_threads(t > 0 ? t : 1);
  }
  return NB_OK;
}

const char *nabla_dist_device(const char *device, const nb_dist *d, char *buf, size_t cap) {
  if (!device || strcmp(device, "cuda") || nb_dist_size(d) <= 1) return device;
  int local = local_rank();
  int per_node = local_ranks();
  if (local < 0) local = per_node > 0 ? nb_dist_rank(d) % per_node : nb_dist_rank(d);
  snprintf(buf, cap, "cuda:%d", local);
  return buf;
}

nb_status nabla_open_devices(const nb_model *m, nb_backend *be, nb_state *st, int threads) {
  nb_status rc = NB_OK;
  for (int i = 0; !rc && i <= nb_model_device_count(m); i++) {
    nb_backend *dev = be;
    if (i < nb_model_device_count(m)) rc = nb_state_device(st, nb_model_device(m, i), &dev);
    if (!rc && threads > 0 && !strncmp(nb_backend_name(dev), "cpu", 3))
      rc = nb_backend_set_threads(dev, threads);
  }
  return rc;
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
