/* nabla: a deep-learning framework in C. Umbrella header. */
#ifndef NABLA_H
#define NABLA_H

#include "backend.h"
#include "graph.h"
#include "tensor.h"

#endif
