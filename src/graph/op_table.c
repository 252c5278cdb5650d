/* The op table: one entry per opcode, filled once by each op family. */
#include <pthread.h>

#include "graph_internal.h"

static nb_op_def table[NB_OP_COUNT];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static nb_status infer_leaf(nb_tensor *t) {
  (void)t; /* leaves set their shape in graph.c */
  return NB_OK;
}

static void build_table(void) {
  table[NB_OP_INPUT] = (nb_op_def){"input", NB_FUSE_LEAF, infer_leaf, NULL};
  table[NB_OP_VARIABLE] = (nb_op_def){"variable", NB_FUSE_LEAF, infer_leaf, NULL};
  table[NB_OP_CONSTANT] = (nb_op_def){"constant", NB_FUSE_LEAF, infer_leaf, NULL};
  table[NB_OP_ASSIGN] = (nb_op_def){"assign", NB_FUSE_OPAQUE, nb_infer_assign, NULL};
  nb_register_ops_elementwise(table);
  nb_register_ops_reduce(table);
  nb_register_ops_shape(table);
  nb_register_ops_linalg(table);
  nb_register_ops_conv(table);
  nb_register_ops_nn(table);
  nb_register_ops_attention(table);
  nb_register_ops_dist(table);
  nb_register_ops_decode(table);
  for (int i = 0; i < NB_OP_COUNT; i++)
    if (!table[i].name) table[i] = (nb_op_def){"unregistered", NB_FUSE_OPAQUE, NULL, NULL};
}

const nb_op_def *nb_op_def_get(nb_opcode op) {
  pthread_once(&table_once, build_table);
  if ((int)op < 0 || op >= NB_OP_COUNT) return &table[NB_OP_INPUT];
  return &table[op];
}

/* Functions built from the ops above; listed so `nabla ops` shows the whole
 * surface a user can call. Their gradients come from their parts. */
static const char *const composites[] = {
    "mean",       "var",           "logsumexp",  "global_avg_pool2d", "batch_norm",
    "layer_norm", "cross_entropy", "nll_loss",   "mse_loss",          "bce_with_logits",
    "embedding",  "transpose",     "contiguous",
};

#define N_COMPOSITES ((int)(sizeof composites / sizeof composites[0]))

int nb_op_count(void) { return NB_OP_COUNT + N_COMPOSITES; }

static const char *fusion_name(nb_fusion f) {
  switch (f) {
  case NB_FUSE_LEAF: return "leaf";
  case NB_FUSE_ELEMWISE: return "elementwise";
  case NB_FUSE_REDUCE: return "reduce";
  case NB_FUSE_VIEW: return "view";
  case NB_FUSE_OPAQUE: return "opaque";
  }
  return "opaque";
}

nb_op_info nb_op_get_info(int i) {
  nb_op_info info = {"", "", 0, 0};
  if (i < 0 || i >= nb_op_count()) return info;
  if (i < NB_OP_COUNT) {
    const nb_op_def *d = nb_op_def_get((nb_opcode)i);
    info.name = d->name;
    info.fusion = fusion_name(d->fusion);
    info.has_backward = d->backward != NULL;
    return info;
  }
  info.name = composites[i - NB_OP_COUNT];
  info.fusion = "composite";
  info.has_backward = 1;
  info.composite = 1;
  return info;
}
