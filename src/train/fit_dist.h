/* What the training loop does differently with several ranks (dist.h):
 * agreeing on the configuration, sharing rank 0's state, reducing epoch
 * statistics. Internal to src/train; every function here is a collective
 * (all ranks call it at the same point) and is a no-op with one rank. */
#ifndef NB_FIT_DIST_H
#define NB_FIT_DIST_H

#include "nabla/fit.h"

/* The ranks agree on the recipe, the data (sizes and a checksum) and
 * whether they resume; then the global batch must split evenly. The same
 * error on every rank otherwise (nb_dist_failed_together). */
nb_status nb_fit_dist_check_config(nb_dist *d, const nb_recipe *r, const nb_dataset *train,
                                   const nb_dataset *test, int resuming);
/* The ranks agree on the compiled training graph (ops, shapes, names: the
 * model file) and on the variables of the state. */
nb_status nb_fit_dist_check_graph(nb_dist *d, const nb_graph *g, const nb_state *st);
/* Every variable of rank 0's state is copied to the other ranks. */
nb_status nb_fit_dist_broadcast_state(nb_dist *d, nb_state *st);
/* Non-trainable variables that the step writes (BatchNorm running
 * statistics, which each rank computes from its own shard) are copied from
 * rank 0, so evaluation and saved files use rank 0's, like PyTorch DDP's
 * broadcast of buffers. */
nb_status nb_fit_dist_sync_buffers(nb_dist *d, const nb_graph *g, nb_state *st);
/* The trainable weights are bit for bit the same on every rank (a checksum
 * compared across ranks); an error naming `epoch` otherwise. */
nb_status nb_fit_dist_check_weights(nb_dist *d, const nb_graph *g, const nb_state *st,
                                    int64_t epoch);
#endif
