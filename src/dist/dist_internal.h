/* What src/dist hands to the layers below it. Internal to nabla. */
#ifndef NB_DIST_INTERNAL_H
#define NB_DIST_INTERNAL_H

#include "../core/collective.h"
#include "nabla/dist.h"

/* The communicator as the graph ops, the plan executor and the backends see
 * it (collective.h); owned by d, valid until nb_dist_free(d). NULL for NULL. */
const nb_collective *nb_dist_collective(nb_dist *d);
/* Waits for every pending non-blocking reduction (collective.h, drain);
 * returns the first failure, with the list emptied either way. */
nb_status nb_dist_drain(nb_dist *d);

#endif
