/* ONNX export of a model file's network: its evaluation graph, optionally
 * with the recipe's input normalisation in front and a softmax behind. */
#include <stdlib.h>
#include <string.h>

#include "nabla/onnx.h"

/* The batch the graph is built with. Any size works once exported (the
 * batch axis becomes "N"); above 1 so that the exporter can tell the batch
 * axis from the axes of size 1 when it follows it through reshapes. A
 * static export has a batch of 1. */
#define EXPORT_BATCH 2

/* (x - mean) * (1 / std) per channel, as nb_recipe_normalize computes it
 * for the data nabla trains and evaluates on. */
static nb_tensor *normalize(nb_graph *g, const nb_recipe *r, nb_tensor *x, int nd,
                            const int64_t *shape) {
  int64_t c = nd >= 2 ? shape[0] : 1, vshape[NB_MAX_DIMS + 1];
  if (r->norm_channels != 1 && r->norm_channels != c) {
    nb_graph_set_error(g, NB_ERR_SHAPE,
                       "onnx export: the recipe normalises %d channels but the input has %lld",
                       r->norm_channels, (long long)c);
    return NULL;
  }
  float mean[NB_RECIPE_MAX_CHANNELS], inv[NB_RECIPE_MAX_CHANNELS];
  for (int64_t i = 0; i < c; i++) {
    int k = r->norm_channels == 1 ? 0 : (int)i;
    mean[i] = r->mean[k];
    inv[i] = 1.0f / r->std[k];
  }
  /* [1, C, 1, ...] against [N, C, ...]; a scalar for feature vectors */
  int vnd = nd >= 2 ? nd + 1 : 0;
  for (int i = 0; i < vnd; i++) vshape[i] = i == 1 ? c : 1;
  nb_tensor *m = nb_constant(g, NB_F32, vnd, vshape, mean);
  nb_tensor *s = nb_constant(g, NB_F32, vnd, vshape, inv);
  return nb_mul(g, nb_sub(g, x, m), s);
}

nb_status nb_onnx_export_model(const nb_model *m, const nb_state *st,
                               const nb_onnx_export_options *opt, const char *path) {
  if (!m || !st || !path)
    return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_export_model: model, state and path are needed");
  nb_onnx_export_options o = opt ? *opt : nb_onnx_export_defaults();
  const nb_recipe *r = nb_model_recipe(m);
  nb_graph *g = nb_graph_new();
  if (!g) return nb_error(NB_ERR_OOM, "onnx export: out of memory");
  nb_nn nn = {.g = g, .seed = r->seed, .init = NB_NN_INIT_TORCH};
  nb_tensor *x = nb_model_new_input(m, g, "input", o.dynamic_batch ? EXPORT_BATCH : 1), *y = NULL;
  int64_t shape[NB_MAX_DIMS];
  int nd = nb_model_input_shape(m, shape, NULL);
  nb_tensor *h = x;
  if (o.normalize && r->norm_channels > 0) h = normalize(g, r, x, nd, shape);
  nb_status rc = nb_model_build(m, &nn, h, &y);
  if (!rc && o.softmax) y = nb_softmax(g, y, -1);
  if (!rc) rc = nb_graph_status(g);
  if (!rc) {
    nb_tensor_set_name(y, o.softmax ? "probabilities" : "logits");
    if (!o.doc_string) o.doc_string = nb_model_name(m);
    rc = nb_onnx_export_file(g, st, 1, &y, &o, path);
  }
  nb_graph_free(g);
  return rc;
}
