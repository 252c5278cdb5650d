/* Mixed precision at graph level: the autocast scope that makes matmul and
 * conv2d take half-precision operands, and the assign guard that lets a
 * loss scaler skip a whole update inside the compiled step.
 *
 * Why in the graph and not in a compiler pass: the casts must exist before
 * autodiff runs, so that the backward rules see half-precision operands and
 * build half-precision gradient ops (and the gradient of each cast), and a
 * compiler pass would have to insert nodes into an already differentiated
 * graph whose node order is its execution order. Building them with the
 * forward ops keeps the graph the single description of the step, visible
 * to `nabla summary`, the DOT writer and every backend alike. */
#include "graph_internal.h"

nb_status nb_graph_set_autocast(nb_graph *g, nb_dtype dt) {
  if (!g) return nb_error(NB_ERR_INVALID_ARG, "nb_graph_set_autocast: graph is NULL");
  if (dt != NB_F32 && !nb_dtype_is_half(dt)) {
    nb_status st = nb_error(NB_ERR_INVALID_ARG,
                            "nb_graph_set_autocast: dtype %s is not f32 (off), bf16 or f16",
                            nb_dtype_name(dt));
    nb_graph_fail(g, st);
    return st;
  }
  g->autocast = dt;
  return NB_OK;
}

nb_dtype nb_graph_autocast(const nb_graph *g) { return g ? g->autocast : NB_F32; }

nb_tensor *nb_autocast_operand(nb_graph *g, nb_tensor *x) {
  if (!g || !x || !nb_dtype_is_half(g->autocast) || x->dtype != NB_F32) return x;
  return nb_cast(g, x, g->autocast);
}

nb_tensor *nb_autocast_grad(nb_graph *g, nb_tensor *gout, const nb_tensor *operand) {
  if (!gout || !operand || !nb_dtype_is_half(operand->dtype)) return gout;
  return nb_cast(g, gout, operand->dtype);
}

void nb_graph_set_assign_guard(nb_graph *g, nb_tensor *skip) {
  if (g) g->assign_guard = skip;
}
