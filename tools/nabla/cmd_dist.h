/* `nabla train` across processes: opening the communicator, the thread
 * count per rank, and failing without leaving the other ranks waiting. */
#ifndef NABLA_CMD_DIST_H
#define NABLA_CMD_DIST_H

#include "nabla/nabla.h"

/* Opens the job's communicator: MPI when an MPI launcher started us (or
 * `forced`, for --distributed, which is an error otherwise, unless
 * NABLA_DIST=self asks for one process that averages its gradients like a
 * job of one rank: NB_DIST_SELF), else one process. With several ranks
 * and no --threads (threads == 0), each rank runs cores / (ranks on this
 * machine) threads, so the ranks of one machine share its cores instead of
 * each taking them all. */
nb_status nabla_dist_open(int forced, int threads, nb_dist **out);

/* The device this rank trains on: with several ranks, "cuda" (no index)
 * becomes cuda:<this rank's index on its machine> (the launcher's local
 * rank), so the ranks of a machine take one GPU each, as NCCL needs; any
 * other name is returned as it is. buf holds the result when one is made. */
const char *nabla_dist_device(const char *device, const nb_dist *d, char *buf, size_t cap);

/* Opens the devices m's layers are placed on (in st, beside be), so that a
 * missing one fails before any data is read, and gives every CPU device
 * `threads` threads when threads > 0 (--device-threads). */
nb_status nabla_open_devices(const nb_model *m, nb_backend *be, nb_state *st, int threads);

/* Prints the failure of command `cmd` ("nabla train: rank R/N: ...") and
 * returns the exit code 1. When the other ranks did not fail at the same
 * point (nb_dist_failed_together), they could wait for this one forever:
 * the whole job is ended (MPI_Abort) instead. */
int nabla_dist_fail(nb_dist *d, const char *cmd);

#endif
