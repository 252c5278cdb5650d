/* Graphviz DOT output for inspecting graphs (`dot -Tsvg`). */
#include "graph_internal.h"

/* Writes a user-given name inside a quoted DOT string: a raw '"' would end
 * the string early and a newline would break the file. */
static void put_escaped(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      fputc(' ', f);
    else
      fputc(*s, f);
  }
}

nb_status nb_graph_write_dot(const nb_graph *g, FILE *f) {
  if (!g || !f) return nb_error(NB_ERR_INVALID_ARG, "nb_graph_write_dot: NULL argument");
  fprintf(f, "digraph nabla {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
  for (int i = 0; i < g->n_nodes; i++) {
    const nb_tensor *t = g->nodes[i];
    char s[128];
    const char *fill = t->op == NB_OP_INPUT      ? "lightblue"
                       : t->op == NB_OP_VARIABLE ? "palegreen"
                       : t->op == NB_OP_CONSTANT ? "lightgrey"
                       : t->op == NB_OP_ASSIGN   ? "orange"
                                                 : "white";
    fprintf(f, "  n%d [label=\"%s%s", t->id, nb_op_def_get(t->op)->name, t->name ? " " : "");
    if (t->name) put_escaped(f, t->name);
    fprintf(f, "\\n%s %s", nb_dtype_name(t->dtype), nb_shape_str(t->ndim, t->shape, s, sizeof s));
    if (t->device) fprintf(f, "\\n@%s", g->devices[t->device - 1]); /* its placement */
    fprintf(f, "\", style=filled, fillcolor=%s%s];\n", fill,
            t->flags & NB_FLAG_OUTPUT ? ", penwidth=3" : "");
    for (int k = 0; k < t->n_in; k++) fprintf(f, "  n%d -> n%d;\n", t->in[k]->id, t->id);
  }
  fprintf(f, "}\n");
  return ferror(f) ? nb_error(NB_ERR_IO, "nb_graph_write_dot: write failed") : NB_OK;
}
