/* nabla: a deep-learning framework in C. Umbrella header. */
#ifndef NABLA_H
#define NABLA_H

#include "backend.h"
#include "data.h"
#include "dist.h"
#include "fit.h"
#include "generate.h"
#include "graph.h"
#include "io.h"
#include "lora.h"
#include "model.h"
#include "nn.h"
#include "onnx.h"
#include "optim.h"
#include "tensor.h"
#include "train.h"

#endif
