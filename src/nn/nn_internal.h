/* Shared by the layer files of src/nn. Not installed. */
#ifndef NB_NN_INTERNAL_H
#define NB_NN_INTERNAL_H

#include "nabla/nn.h"

/* The seed of a parameter or dropout mask: the model seed mixed with its
 * name, so a model built twice (train and eval graphs) draws identical
 * initial values. */
uint64_t nb_nn_name_seed(uint64_t seed, const char *name);

/* Adds the LoRA branch of Linear layer `name` (input x [..., in], output y
 * [..., out] of the base layer) under nn->lora and returns the sum; NULL
 * with a graph error for a bad configuration (src/nn/lora.c). */
nb_tensor *nb_nn_lora_linear(const nb_nn *nn, const char *name, nb_tensor *x, nb_tensor *y,
                             int64_t in, int64_t out);

#endif
