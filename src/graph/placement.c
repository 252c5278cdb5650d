/* Device placement of graph nodes: device names, the placement scope that
 * new nodes take, and the micro-batch role of inputs and outputs. The graph
 * only records names; the compiler (src/compile/place.c) turns them into
 * backends, and docs/distributed.md describes the rules. */
#include <stdlib.h>
#include <string.h>

#include "graph_internal.h"

nb_status nb_device_canonical(const char *device, char *out, size_t cap) {
  if (!device || !out || !cap)
    return nb_error(NB_ERR_INVALID_ARG, "nb_device_canonical: NULL argument");
  const char *colon = strchr(device, ':');
  size_t kind_len = colon ? (size_t)(colon - device) : strlen(device);
  const char *kind = NULL;
  if (kind_len == 3 && !strncmp(device, "cpu", 3)) kind = "cpu";
  if (kind_len == 4 && !strncmp(device, "cuda", 4)) kind = "cuda";
  long index = 0;
  int ok = kind != NULL;
  if (ok && colon) {
    char *end = NULL;
    /* digits only: strtol would take "+1", " 1" or "0x1" */
    ok = colon[1] >= '0' && colon[1] <= '9';
    if (ok) index = strtol(colon + 1, &end, 10);
    ok = ok && end && !*end && index >= 0 && index <= 1023;
  }
  if (!ok)
    return nb_error(NB_ERR_INVALID_ARG,
                    "unknown device '%s' (expected cpu, cpu:N, cuda or cuda:N with N in 0..1023)",
                    device);
  int n = snprintf(out, cap, "%s:%ld", kind, index);
  if (n < 0 || (size_t)n >= cap)
    return nb_error(NB_ERR_INVALID_ARG, "nb_device_canonical: buffer too small for '%s'", device);
  return NB_OK;
}

int nb_graph_device_index(nb_graph *g, const char *name) {
  if (!name || !*name) return 0;
  char canon[NB_DEVICE_NAME_MAX];
  if (nb_device_canonical(name, canon, sizeof canon)) return -1;
  for (int i = 0; i < g->n_devices; i++)
    if (!strcmp(g->devices[i], canon)) return i + 1;
  if (g->n_devices == NB_GRAPH_MAX_DEVICES) {
    nb_error(NB_ERR_UNSUPPORTED, "device '%s': a graph places nodes on at most %d devices", canon,
             NB_GRAPH_MAX_DEVICES);
    return -1;
  }
  memcpy(g->devices[g->n_devices], canon, sizeof canon);
  return ++g->n_devices;
}

nb_status nb_graph_set_device(nb_graph *g, const char *device) {
  if (!g) return nb_error(NB_ERR_INVALID_ARG, "nb_graph_set_device: graph is NULL");
  int d = nb_graph_device_index(g, device);
  if (d < 0) {
    nb_status st = nb_error(NB_ERR_INVALID_ARG, "nb_graph_set_device: %s", nb_last_error());
    nb_graph_fail(g, st);
    return st;
  }
  g->scope_device = d;
  return NB_OK;
}

const char *nb_graph_device(const nb_graph *g) {
  return g && g->scope_device ? g->devices[g->scope_device - 1] : "";
}

nb_status nb_tensor_set_device(nb_tensor *t, const char *device) {
  if (!t) return nb_error(NB_ERR_INVALID_ARG, "nb_tensor_set_device: node is NULL");
  int d = nb_graph_device_index(t->graph, device);
  if (d < 0) return nb_error(NB_ERR_INVALID_ARG, "nb_tensor_set_device: %s", nb_last_error());
  t->device = d;
  return NB_OK;
}

const char *nb_tensor_device(const nb_tensor *t) {
  return t && t->device ? t->graph->devices[t->device - 1] : "";
}

void nb_tensor_set_micro(nb_tensor *t, nb_micro how) {
  if (t && how >= NB_MICRO_MEAN && how <= NB_MICRO_SUM) t->micro = (int)how;
}

nb_micro nb_tensor_micro(const nb_tensor *t) { return t ? (nb_micro)t->micro : NB_MICRO_MEAN; }

/* 1 if x reads a variable's data (the variable or a view of it). */
static int reads_variable(const nb_tensor *x) {
  return (x->base ? x->base : x)->op == NB_OP_VARIABLE;
}

void nb_place_forward(const nb_graph *g, int n, int *dev) {
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    dev[i] = t->device;
    /* the compiler's rule 3 (src/compile/place.c): a layer runs where its
     * weights are, else where its input comes from */
    for (int k = 0; !dev[i] && !t->base && k < t->n_in; k++)
      if (reads_variable(t->in[k])) dev[i] = dev[t->in[k]->id];
    for (int k = 0; !dev[i] && k < t->n_in; k++) dev[i] = dev[t->in[k]->id];
  }
}
