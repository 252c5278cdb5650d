/* LoRA adapters on Linear layers: which layers a configuration targets, the
 * adapter's ops, the checks once a network is built, and attaching a
 * configuration to a model file. Adapter files and merging live in
 * src/io/lora_file.c. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"
#include "nn_internal.h"

/* The next non-empty comma-separated pattern of `list` at or after *pos,
 * spaces trimmed; 0 when there is none. `list` is read up to its NUL or
 * NB_LORA_TARGETS_MAX characters, whichever comes first. */
static int next_pattern(const char *list, size_t *pos, const char **pat, size_t *len) {
  size_t i = *pos;
  while (i < NB_LORA_TARGETS_MAX && list[i]) {
    size_t start = i;
    while (i < NB_LORA_TARGETS_MAX && list[i] && list[i] != ',') i++;
    size_t end = i;
    if (i < NB_LORA_TARGETS_MAX && list[i] == ',') i++;
    while (start < end && list[start] == ' ') start++;
    while (end > start && list[end - 1] == ' ') end--;
    if (end > start) {
      *pos = i;
      *pat = list + start;
      *len = end - start;
      return 1;
    }
  }
  *pos = i;
  return 0;
}

static int contains(const char *name, const char *pat, size_t len) {
  for (const char *s = name; *s; s++)
    if (!strncmp(s, pat, len)) return 1;
  return 0;
}

nb_status nb_lora_check(const nb_lora *l) {
  if (!l) return nb_error(NB_ERR_INVALID_ARG, "lora: the configuration is NULL");
  if (l->rank < 1) return nb_error(NB_ERR_INVALID_ARG, "lora: rank must be >= 1, got %d", l->rank);
  if (!(l->alpha > 0.0f) || !isfinite(l->alpha))
    return nb_error(NB_ERR_INVALID_ARG, "lora: alpha must be a positive number, got %g",
                    (double)l->alpha);
  if (!(l->dropout >= 0.0f && l->dropout < 1.0f))
    return nb_error(NB_ERR_INVALID_ARG, "lora: dropout must be in [0, 1), got %g",
                    (double)l->dropout);
  if (!memchr(l->targets, '\0', NB_LORA_TARGETS_MAX))
    return nb_error(NB_ERR_INVALID_ARG, "lora: the target list is longer than %d characters",
                    NB_LORA_TARGETS_MAX - 1);
  size_t pos = 0, len;
  const char *pat;
  if (!next_pattern(l->targets, &pos, &pat, &len))
    return nb_error(NB_ERR_INVALID_ARG,
                    "lora: no target layers given (a comma-separated list of name patterns such "
                    "as \"attn\" or \"fc1,fc2\", or \"*\" for every Linear layer)");
  return NB_OK;
}

int nb_lora_matches(const nb_lora *l, const char *name) {
  if (!l || !name) return 0;
  size_t pos = 0, len;
  const char *pat;
  while (next_pattern(l->targets, &pos, &pat, &len))
    if ((len == 1 && pat[0] == '*') || contains(name, pat, len)) return 1;
  return 0;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

int nb_lora_is_adapter(const char *name) {
  return name && (ends_with(name, ".lora_A") || ends_with(name, ".lora_B"));
}

nb_tensor *nb_nn_lora_linear(const nb_nn *nn, const char *name, nb_tensor *x, nb_tensor *y,
                             int64_t in, int64_t out) {
  nb_graph *g = nn->g;
  const nb_lora *l = nn->lora;
  if (!y) return NULL;
  nb_status st = nb_lora_check(l);
  if (st) {
    nb_graph_set_error(g, st, "%s: %s", name, nb_last_error());
    return NULL;
  }
  if (l->rank > in || l->rank > out) {
    nb_graph_set_error(g, NB_ERR_INVALID_ARG,
                       "%s: LoRA rank %d exceeds min(in %lld, out %lld); use a rank of at most "
                       "%lld",
                       name, l->rank, (long long)in, (long long)out,
                       (long long)(in < out ? in : out));
    return NULL;
  }
  char an[256], bn[256], dn[256];
  if (snprintf(an, sizeof an, "%s.lora_A", name) >= (int)sizeof an ||
      snprintf(bn, sizeof bn, "%s.lora_B", name) >= (int)sizeof bn ||
      snprintf(dn, sizeof dn, "%s.lora_dropout", name) >= (int)sizeof dn) {
    nb_graph_set_error(g, NB_ERR_INVALID_ARG, "%s: layer name too long for LoRA parameters", name);
    return NULL;
  }
  int64_t as[2] = {l->rank, in}, bs[2] = {out, l->rank};
  /* loralib: kaiming_uniform_(A, a=sqrt(5)) has gain sqrt(2 / (1 + 5)) and
   * bound gain * sqrt(3 / fan_in) = 1 / sqrt(in); B starts at zero */
  float bound = 1.0f / sqrtf((float)in);
  nb_init ai = {NB_INIT_UNIFORM, -bound, bound, nb_nn_name_seed(nn->seed, an)};
  nb_init bi = {NB_INIT_ZEROS, 0.0f, 0.0f, 0};
  /* one statement each: the creation order is the parameter order */
  nb_tensor *a = nb_param(g, an, 2, as, ai);
  nb_tensor *b = nb_param(g, bn, 2, bs, bi);
  nb_tensor *h = x;
  if (l->dropout > 0.0f)
    h = nb_dropout(g, x, l->dropout, nb_nn_name_seed(nn->seed, dn), nn->training);
  h = nb_matmul(g, h, nb_transpose(g, a, 0, 1));
  h = nb_matmul(g, h, nb_transpose(g, b, 0, 1));
  /* loralib's order: (dropout(x) A^T B^T) * scaling, added to the base output */
  return nb_add(g, y, nb_mul(g, h, nb_scalar(g, l->alpha / (float)l->rank)));
}

/* Only the public graph API below (node walking, op names, inputs): nn
 * builds on graphs, it does not reach into their nodes. */
static int is_op(const nb_tensor *t, const char *op) { return !strcmp(nb_tensor_op_name(t), op); }

/* 1 if variable v is a 2-D "<layer>.weight" that a transpose feeds to a
 * matmul and no embedding looks up: the weight of a Linear layer. */
static int is_linear_weight(const nb_graph *g, const nb_tensor *v, int first) {
  if (!is_op(v, "variable") || nb_tensor_ndim(v) != 2 || !ends_with(nb_tensor_name(v), ".weight"))
    return 0;
  int transposed = 0;
  for (int i = first; i < nb_graph_node_count(g); i++) {
    const nb_tensor *t = nb_graph_node(g, i);
    if (nb_tensor_input(t, 0) != v) continue;
    if (is_op(t, "index_select")) return 0;
    if (is_op(t, "permute")) transposed = 1;
  }
  return transposed;
}

nb_status nb_nn_finish(const nb_nn *nn, int first_node) {
  if (!nn || !nn->g) return nb_error(NB_ERR_INVALID_ARG, "nb_nn_finish: nn and its graph needed");
  nb_graph *g = nn->g;
  if (nb_graph_status(g)) return nb_error(nb_graph_status(g), "%s", nb_graph_error(g));
  int n_nodes = nb_graph_node_count(g);
  if (first_node < 0 || first_node > n_nodes)
    return nb_error(NB_ERR_INVALID_ARG, "nb_nn_finish: first node %d outside the graph's %d",
                    first_node, n_nodes);
  if (nn->freeze_base)
    for (int i = first_node; i < n_nodes; i++) {
      nb_tensor *t = nb_graph_node(g, i);
      if (is_op(t, "variable") && !nb_lora_is_adapter(nb_tensor_name(t)))
        nb_tensor_set_requires_grad(t, 0);
    }
  if (!nn->lora) return NB_OK;
  nb_status st = nb_lora_check(nn->lora);
  if (st) return st;
  for (int i = first_node; i < n_nodes; i++) {
    const nb_tensor *t = nb_graph_node(g, i);
    if (is_op(t, "variable") && ends_with(nb_tensor_name(t), ".lora_A")) return NB_OK;
  }
  /* nothing matched: name the layers that could have */
  char list[512] = "";
  size_t used = 0;
  int n = 0;
  for (int i = first_node; i < n_nodes; i++) {
    const nb_tensor *t = nb_graph_node(g, i);
    if (!is_linear_weight(g, t, first_node)) continue;
    const char *name = nb_tensor_name(t);
    size_t len = strlen(name) - strlen(".weight");
    if (used + len + 8 >= sizeof list) {
      snprintf(list + used, sizeof list - used, ", ...");
      break;
    }
    used += (size_t)snprintf(list + used, sizeof list - used, "%s%.*s", n++ ? ", " : "", (int)len,
                             name);
  }
  return nb_error(NB_ERR_INVALID_ARG,
                  "lora: targets '%s' match no Linear layer (Linear layers: %s)", nn->lora->targets,
                  n ? list : "none");
}

/* ---- models ------------------------------------------------------------------ */

nb_status nb_model_set_lora(nb_model *m, const nb_lora *lora) {
  if (!m) return nb_error(NB_ERR_INVALID_ARG, "nb_model_set_lora: model is NULL");
  if (!lora) {
    m->has_lora = 0;
    return NB_OK;
  }
  nb_status st = nb_lora_check(lora);
  if (st) return st;
  m->lora = *lora;
  m->has_lora = 1;
  return NB_OK;
}

const nb_lora *nb_model_lora(const nb_model *m) { return m && m->has_lora ? &m->lora : NULL; }
