/* Which ops nabla's CUDA backend runs, known to every build, also those
 * without CUDA, so that `nabla ops` (and docs/ops.md, generated from it)
 * print the same cuda column everywhere. A CUDA build answers from its
 * kernel table instead (cuda_backend.cu), so a kernel added or removed
 * without this list makes docs_ops_current fail there. */
#include "backend_internal.h"

int nb_cuda_lists_op(nb_opcode op) {
  switch (op) {
  case NB_OP_ASSIGN:
  /* elementwise (cuda_elementwise.cu) */
  case NB_OP_ADD:
  case NB_OP_SUB:
  case NB_OP_MUL:
  case NB_OP_DIV:
  case NB_OP_POW:
  case NB_OP_MAXIMUM:
  case NB_OP_MINIMUM:
  case NB_OP_EQ:
  case NB_OP_NE:
  case NB_OP_LT:
  case NB_OP_LE:
  case NB_OP_GT:
  case NB_OP_GE:
  case NB_OP_GELU_BWD:
  case NB_OP_WHERE:
  case NB_OP_NEG:
  case NB_OP_ABS:
  case NB_OP_SIGN:
  case NB_OP_EXP:
  case NB_OP_LOG:
  case NB_OP_SQRT:
  case NB_OP_RSQRT:
  case NB_OP_SQUARE:
  case NB_OP_RECIPROCAL:
  case NB_OP_TANH:
  case NB_OP_ERF:
  case NB_OP_SIGMOID:
  case NB_OP_RELU:
  case NB_OP_LEAKY_RELU:
  case NB_OP_GELU:
  case NB_OP_SILU:
  case NB_OP_SOFTPLUS:
  case NB_OP_CLAMP:
  case NB_OP_DROPOUT:
  /* cuda_copy.cu, cuda_reduce.cu, cuda_movement.cu */
  case NB_OP_CAST:
  case NB_OP_COPY:
  case NB_OP_SUM:
  case NB_OP_MAX:
  case NB_OP_MIN:
  case NB_OP_ARGMAX:
  case NB_OP_CONCAT:
  case NB_OP_PAD:
  case NB_OP_INDEX_SELECT:
  case NB_OP_INDEX_ADD:
  case NB_OP_ONE_HOT:
  /* cuda_matmul.cu, cuda_conv.cu, cuda_pool.cu, cuda_softmax.cu, cuda_attention.cu */
  case NB_OP_MATMUL:
  case NB_OP_CONV2D:
  case NB_OP_CONV2D_BWD_INPUT:
  case NB_OP_CONV2D_BWD_WEIGHT:
  case NB_OP_MAXPOOL2D:
  case NB_OP_MAXPOOL2D_BWD:
  case NB_OP_AVGPOOL2D:
  case NB_OP_AVGPOOL2D_BWD:
  case NB_OP_SOFTMAX:
  case NB_OP_LOG_SOFTMAX:
  case NB_OP_ATTENTION:
  case NB_OP_ATTENTION_BWD:
  /* cuda_decode.cu, and attention_cached in cuda_attention.cu */
  case NB_OP_WRITE_AT:
  case NB_OP_SLICE_AT:
  case NB_OP_ATTENTION_CACHED:
  /* cuda_nccl.cu (NCCL, loaded at run time) */
  case NB_OP_ALLREDUCE_START:
  case NB_OP_ALLREDUCE_WAIT: return 1;
  default: return 0;
  }
}
