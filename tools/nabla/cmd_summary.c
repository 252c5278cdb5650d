/* `nabla summary MODEL [--batch B]`: what a model file describes, layer by
 * layer, and what one training step of it costs in memory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/nabla.h"

static void usage(FILE *f) {
  fprintf(f, "usage: nabla summary MODEL [--batch B] [--vocab N] [--place LAYER=DEVICE,...]\n"
             "\n"
             "Parses the model file MODEL (see docs/model-format.md) and prints its recipe,\n"
             "one row per layer (name, type, output shape for a batch of B, parameters),\n"
             "the parameter total, and the memory plan of one training step (forward,\n"
             "backward and the recipe's optimizer compiled for the CPU): the arena that\n"
             "holds every intermediate beside their naive sum, and the persistent state.\n"
             "\n"
             "  --batch B   batch size (default: the recipe's batch)\n"
             "  --vocab N   what `vocab` stands for in a text model (default 65; training\n"
             "              takes it from the data)\n"
             "  --place L=D,...  places layers on devices as `nabla train --place` does,\n"
             "              and prints each device's share (on logical CPU devices)\n"
             "  --help      print this help\n");
}

int nabla_cmd_summary(int argc, char **argv) {
  const char *path = NULL;
  long long batch = 0, vocab = 0;
  const char *place = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--batch") || !strncmp(a, "--batch=", 8)) {
      const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
      char *end = NULL;
      errno = 0;
      batch = v ? strtoll(v, &end, 10) : 0;
      if (!v || !*v || *end || errno || batch < 1) {
        fprintf(stderr, "nabla summary: --batch needs an integer >= 1, found '%s'\n",
                v ? v : "nothing");
        return 2;
      }
    } else if (!strcmp(a, "--vocab")) {
      const char *v = i + 1 < argc ? argv[++i] : NULL;
      char *end = NULL;
      errno = 0;
      vocab = v ? strtoll(v, &end, 10) : 0;
      if (!v || !*v || *end || errno || vocab < 1) {
        fprintf(stderr, "nabla summary: --vocab needs an integer >= 1, found '%s'\n",
                v ? v : "nothing");
        return 2;
      }
    } else if (!strcmp(a, "--place")) {
      place = i + 1 < argc ? argv[++i] : NULL;
      if (!place) {
        fprintf(stderr, "nabla summary: --place needs LAYER=DEVICE,...\n");
        return 2;
      }
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "nabla summary: unknown option %s (see nabla summary --help)\n", a);
      return 2;
    } else if (path) {
      fprintf(stderr, "nabla summary: one model file expected, found '%s' and '%s'\n", path, a);
      return 2;
    } else {
      path = a;
    }
  }
  if (!path) {
    usage(stderr);
    return 2;
  }
  nb_model *m = NULL;
  if (nb_model_load(path, &m)) {
    fprintf(stderr, "nabla summary: %s\n", nb_last_error());
    return 1;
  }
  if ((vocab && nb_model_set_vocab(m, (int64_t)vocab)) ||
      (place && nb_model_set_placement(m, place))) {
    fprintf(stderr, "nabla summary: %s\n", nb_last_error());
    nb_model_free(m);
    return 1;
  }
  if (!batch) batch = nb_model_recipe(m)->batch;
  int rc = 0;
  if (nb_model_summary(m, (int64_t)batch, stdout)) {
    fflush(stdout);
    fprintf(stderr, "nabla summary: %s\n", nb_last_error());
    rc = 1;
  }
  nb_model_free(m);
  return rc;
}
