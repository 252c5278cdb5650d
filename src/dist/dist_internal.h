/* What src/dist hands to the layers below it. Internal to nabla. */
#ifndef NB_DIST_INTERNAL_H
#define NB_DIST_INTERNAL_H

#include "../core/collective.h"
#include "nabla/dist.h"

/* The communicator as the graph ops, the plan executor and the backends see
 * it (collective.h); owned by d, valid until nb_dist_free(d). NULL for NULL. */
const nb_collective *nb_dist_collective(nb_dist *d);

#endif
