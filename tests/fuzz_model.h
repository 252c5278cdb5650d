/* Fuzz target for model files (the .cfg text of model.h): parsed with
 * nb_model_parse, and a model that parses must also build: its inference
 * graph for a batch of 2, and when that graph is small, compiled and run on
 * zeros, its `nabla summary` (a training step: loss, backward, the recipe's
 * optimizer, compiled), and for token-sequence models the decode graph.
 * Same contract as tests/fuzz_targets.h: every failure is a status with a
 * message (parse errors naming the file), never NB_ERR_INTERNAL or a crash. */
#ifndef NB_FUZZ_MODEL_H
#define NB_FUZZ_MODEL_H

#include "fuzz_common.h"

/* Elements over every node of a graph that is compiled and run: a mutated
 * width must not make one input cost seconds. */
#define FZ_MODEL_MAX_NUMEL ((int64_t)1 << 18)

static int64_t fz_graph_numel(const nb_graph *g) {
  int64_t total = 0;
  for (int i = 0; i < nb_graph_node_count(g) && total <= FZ_MODEL_MAX_NUMEL; i++)
    total += nb_tensor_numel(nb_graph_node(g, i));
  return total;
}

/* Compiles the inference graph and runs it once on zero inputs. */
static const char *fz_model_run(nb_graph *g, nb_tensor *x, nb_tensor *y, fz_stats *s) {
  nb_backend *be = fz_cpu();
  nb_state *state = NULL;
  nb_plan *plan = NULL;
  const char *bad = NULL;
  nb_tensor_set_output(y);
  nb_status st = be ? nb_state_new(be, &state) : NB_ERR_OOM;
  if (!st) st = nb_compile(g, be, state, NULL, &plan);
  if (st) bad = st == NB_ERR_INTERNAL ? "compile: NB_ERR_INTERNAL on a model's graph" : NULL;
  size_t bytes = (size_t)nb_tensor_numel(x) * nb_dtype_size(nb_tensor_dtype(x));
  void *zeros = plan ? calloc(bytes ? bytes : 1, 1) : NULL;
  if (zeros) {
    s->compiled++;
    st = nb_plan_set_input(plan, x, zeros, bytes);
    if (!st) st = nb_plan_run(plan);
    if (st) bad = fz_check_error(st, NULL);
  }
  free(zeros);
  nb_plan_free(plan);
  nb_state_free(state);
  return bad;
}

/* The decode graph of a token-sequence model, one new token at a time. */
static const char *fz_model_decode(const nb_model *m) {
  int64_t ctx = nb_model_context(m);
  if (ctx < 1 || ctx > 4096) return NULL;
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 1};
  int64_t is[2] = {1, 1}, ps[1] = {1};
  nb_tensor *ids = nb_input(g, "ids", NB_I32, 2, is), *pos = nb_input(g, "pos", NB_I32, 1, ps);
  nb_tensor *logits = NULL;
  nb_status st = nb_model_build_decode(m, &nn, ids, pos, ctx, &logits);
  nb_graph_free(g);
  return st ? fz_check_error(st, NULL) : NULL;
}

static const char *fz_model(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  s->inputs++;
  char *text = malloc(n + 1);
  if (!text) return "out of memory in the harness";
  memcpy(text, data, n);
  text[n] = '\0';
  nb_model *m = NULL;
  nb_status st = nb_model_parse(text, name, &m);
  free(text);
  if (st) return m ? "a failed parse returned a model" : fz_check_error(st, name);
  s->parsed++;
  const char *bad = NULL;
  int64_t shape[NB_MAX_DIMS];
  nb_dtype dt;
  int nd = nb_model_input_shape(m, shape, &dt);
  if (nd < 1 || nd >= NB_MAX_DIMS) bad = "parsed model's input rank is outside [1, 7]";
  for (int d = 0; !bad && d < nd; d++)
    if (shape[d] < 1) bad = "parsed model's input has a dimension < 1";
  nb_schedule sched;
  st = bad ? NB_OK : nb_recipe_schedule(nb_model_recipe(m), 10, &sched);
  if (st) bad = fz_check_error(st, NULL);

  nb_graph *g = bad ? NULL : nb_graph_new();
  int small = 0;
  if (g) {
    nb_nn nn = {.g = g, .seed = 1};
    nb_tensor *x = nb_model_new_input(m, g, "x", 2), *y = NULL;
    st = x ? nb_model_build(m, &nn, x, &y) : nb_graph_status(g);
    if (st) {
      bad = fz_check_error(st, x ? name : NULL);
    } else {
      s->built++;
      small = fz_graph_numel(g) <= FZ_MODEL_MAX_NUMEL;
      if (small) bad = fz_model_run(g, x, y, s);
    }
  }
  nb_graph_free(g);
  FILE *devnull = small && !bad ? fopen("/dev/null", "w") : NULL;
  if (devnull) {
    st = nb_model_summary(m, 2, devnull);
    if (st) bad = fz_check_error(st, NULL);
    fclose(devnull);
  }
  if (!bad && nb_model_is_text(m)) bad = fz_model_decode(m);
  nb_model_free(m);
  return bad;
}

#endif
