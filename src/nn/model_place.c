/* Model files, placement: which device each layer runs on, from the
 * layers' `device` keys or a NAME=DEVICE list (`nabla train --place`). The
 * builder (model.c) opens a placement scope per layer; the compiler does
 * the rest (docs/distributed.md, "Model parallelism"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static nb_model_layer *find_layer(nb_model *m, const char *name, size_t len) {
  for (int i = 0; i < m->n_layers; i++) {
    nb_model_layer *l = &m->layers[i];
    if (l->kind != NB_LAYER_END && strlen(l->name) == len && !strncmp(l->name, name, len)) return l;
  }
  return NULL;
}

/* "conv1, layer2, ..." for error messages. */
static void layer_names(const nb_model *m, char *buf, size_t cap) {
  buf[0] = '\0';
  for (int i = 0; i < m->n_layers; i++) {
    if (m->layers[i].kind == NB_LAYER_END) continue;
    size_t n = strlen(buf);
    if (n + strlen(m->layers[i].name) + 8 >= cap) {
      snprintf(buf + n, cap - n, "%s...", n ? ", " : "");
      return;
    }
    snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", m->layers[i].name);
  }
}

nb_status nb_model_set_placement(nb_model *m, const char *spec) {
  if (!m) return nb_error(NB_ERR_INVALID_ARG, "nb_model_set_placement: model is NULL");
  char(*dev)[16] = calloc((size_t)(m->n_layers ? m->n_layers : 1), sizeof *dev);
  char *named = calloc((size_t)(m->n_layers ? m->n_layers : 1), 1); /* placed by this spec */
  if (!dev || !named) {
    free(dev);
    free(named);
    return nb_error(NB_ERR_OOM, "nb_model_set_placement: out of memory");
  }
  for (int i = 0; i < m->n_layers; i++) memcpy(dev[i], m->layers[i].device, sizeof dev[i]);
  nb_status st = NB_OK;
  if (!spec || !*spec) {
    memset(dev, 0, (size_t)m->n_layers * sizeof *dev);
  }
  for (const char *c = spec; c && *c && !st;) {
    size_t len = strcspn(c, ",");
    char item[256];
    snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item ? len : sizeof item - 1), c);
    c += len + (c[len] == ',');
    char *eq = strchr(item, '=');
    char *name = item, *device = eq ? eq + 1 : NULL;
    if (eq) *eq = '\0';
    /* spaces around the parts are allowed: "conv1 = cpu:1, fc1 = cpu:1" */
    while (*name == ' ') name++;
    size_t nlen = strlen(name);
    while (nlen && name[nlen - 1] == ' ') nlen--;
    while (device && *device == ' ') device++;
    if (device) {
      size_t dlen = strlen(device);
      while (dlen && device[dlen - 1] == ' ') device[--dlen] = '\0';
    }
    if (!nlen && !device) continue; /* an empty item: "a=cpu:1,,b=cpu:0" */
    if (!device || !nlen || !*device) {
      st = nb_error(NB_ERR_INVALID_ARG,
                    "placement '%s': expected LAYER=DEVICE pairs separated by commas, e.g. "
                    "conv1=cpu:1,fc1=cpu:1",
                    item);
      break;
    }
    nb_model_layer *l = find_layer(m, name, nlen);
    if (!l) {
      char names[512];
      layer_names(m, names, sizeof names);
      st = nb_error(NB_ERR_INVALID_ARG, "placement: %s has no layer '%.*s' (layers: %s)", m->source,
                    (int)nlen, name, names);
      break;
    }
    if (named[l - m->layers]) { /* which one was meant? */
      st = nb_error(NB_ERR_INVALID_ARG, "placement: layer '%s' is placed twice; give it once",
                    l->name);
      break;
    }
    named[l - m->layers] = 1;
    char canon[16];
    st = nb_device_canonical(device, canon, sizeof canon);
    if (st) {
      char msg[512];
      snprintf(msg, sizeof msg, "%s", nb_last_error());
      st = nb_error(st, "placement of layer '%s': %s", l->name, msg);
      break;
    }
    memcpy(dev[l - m->layers], canon, sizeof canon);
  }
  if (!st)
    for (int i = 0; i < m->n_layers; i++) memcpy(m->layers[i].device, dev[i], sizeof dev[i]);
  free(dev);
  free(named);
  return st;
}

const char *nb_model_layer_device(const nb_model *m, const char *name) {
  if (!m || !name) return NULL;
  nb_model_layer *l = find_layer((nb_model *)m, name, strlen(name));
  return l ? l->device : NULL;
}

int nb_model_device_count(const nb_model *m) {
  int n = 0;
  for (int i = 0; m && i < m->n_layers; i++) {
    const char *d = m->layers[i].device;
    if (!d[0]) continue;
    int seen = 0;
    for (int j = 0; j < i && !seen; j++) seen = !strcmp(m->layers[j].device, d);
    n += !seen;
  }
  return n;
}

const char *nb_model_device(const nb_model *m, int i) {
  for (int k = 0, n = 0; m && k < m->n_layers; k++) {
    const char *d = m->layers[k].device;
    if (!d[0]) continue;
    int seen = 0;
    for (int j = 0; j < k && !seen; j++) seen = !strcmp(m->layers[j].device, d);
    if (!seen && n++ == i) return d;
  }
  return NULL;
}
