/* LoRA on the command line: the adapter flags of `nabla train`, starting
 * a run from existing weights (--init-from), writing the adapter file after
 * it, and `nabla lora merge`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_lora.h"
#include "text_vocab.h"

const char nabla_lora_train_usage[] =
    "Fine-tuning: --init-from WEIGHTS starts from a weights file instead of fresh\n"
    "weights. --lora-rank R --lora-targets PATTERNS [--lora-alpha A] [--lora-dropout P]\n"
    "adds LoRA adapters to the Linear layers whose names contain one of the\n"
    "comma-separated PATTERNS ('attn', 'fc1,fc2', '*' for all) and trains only\n"
    "them (alpha defaults to R); the adapters go to OUT/lora.safetensors.\n";

int nabla_lora_parse_flag(const char *flag, const char *v, nabla_lora_flags *f, int *bad) {
  char *end = NULL;
  errno = 0;
  if (!strcmp(flag, "--lora-rank")) {
    long r = strtol(v, &end, 10);
    f->rank = r > 0 && r < 1 << 30 ? (int)r : 0;
    *bad = !*v || *end || errno || r < 1 || r >= 1 << 30;
  } else if (!strcmp(flag, "--lora-alpha")) {
    f->alpha = strtof(v, &end);
    *bad = !*v || *end || errno || !(f->alpha > 0);
  } else if (!strcmp(flag, "--lora-dropout")) {
    f->dropout = strtof(v, &end);
    *bad = !*v || *end || errno || !(f->dropout >= 0 && f->dropout < 1);
  } else if (!strcmp(flag, "--lora-targets")) {
    f->targets = v;
    *bad = !*v;
  } else {
    return 0;
  }
  f->given = 1;
  return 1;
}

static const char *grouped(long long v, char *buf, size_t cap) {
  char digits[32];
  snprintf(digits, sizeof digits, "%lld", v < 0 ? -v : v);
  size_t n = strlen(digits), o = 0;
  if (v < 0 && o + 1 < cap) buf[o++] = '-';
  for (size_t i = 0; i < n && o + 2 < cap; i++) {
    if (i && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = '\0';
  return buf;
}

nb_status nabla_lora_setup(nb_model *m, const nabla_lora_flags *f, FILE *log) {
  if (!f->given) return NB_OK;
  if (!f->rank || !f->targets)
    return nb_error(NB_ERR_INVALID_ARG, "LoRA needs both --lora-rank R and --lora-targets "
                                        "PATTERNS (e.g. --lora-rank 8 --lora-targets attn)");
  nb_lora l;
  memset(&l, 0, sizeof l);
  l.rank = f->rank;
  l.alpha = f->alpha > 0 ? f->alpha : (float)f->rank;
  l.dropout = f->dropout;
  if (strlen(f->targets) >= sizeof l.targets)
    return nb_error(NB_ERR_INVALID_ARG, "--lora-targets: longer than %d characters",
                    (int)sizeof l.targets - 1);
  snprintf(l.targets, sizeof l.targets, "%s", f->targets);
  int64_t full = 0, trainable = 0;
  nb_status rc = nb_model_param_count(m, &full);
  if (!rc) rc = nb_model_set_lora(m, &l);
  /* builds the adapted network once: bad targets or ranks fail here */
  if (!rc) rc = nb_model_param_count(m, &trainable);
  if (rc) return rc;
  char a[32], b[32];
  fprintf(log, "LoRA: rank %d, alpha %g (scale %g), dropout %g, targets '%s': %s trainable", l.rank,
          (double)l.alpha, (double)(l.alpha / (float)l.rank), (double)l.dropout, l.targets,
          grouped(trainable, a, sizeof a));
  /* a text model's vocabulary, hence its size, comes from the data later */
  if (!nb_model_takes_vocab(m))
    fprintf(log, " of %s parameters (%.2f%%)", grouped(full, b, sizeof b),
            full ? 100.0 * (double)trainable / (double)full : 0.0);
  fprintf(log, "; everything else is frozen\n");
  return NB_OK;
}

/* Compiles a batch-one inference graph of m into st, creating its
 * variables. */
static nb_status create_vars(const nb_model *m, nb_backend *be, nb_state *st) {
  nb_graph *g = nb_graph_new();
  if (!g) return nb_error(NB_ERR_OOM, "out of memory");
  nb_nn nn = {.g = g, .seed = 1, .init = NB_NN_INIT_TORCH};
  nb_tensor *x = nb_model_new_input(m, g, "x", 1), *y = NULL;
  nb_plan *p = NULL;
  nb_status rc = nb_model_build(m, &nn, x, &y);
  if (!rc) nb_tensor_set_output(y);
  if (!rc) rc = nb_compile(g, be, st, NULL, &p);
  nb_plan_free(p);
  nb_graph_free(g);
  return rc;
}

nb_status nabla_init_state(nb_model *m, nb_backend *be, const char *weights, nb_state **st) {
  *st = NULL;
  /* the base network alone: the file has no adapters to fill */
  nb_lora keep;
  const nb_lora *attached = nb_model_lora(m);
  if (attached) keep = *attached;
  nb_status rc = nb_model_set_lora(m, NULL);
  if (!rc) rc = nb_state_new(be, st);
  if (!rc) rc = create_vars(m, be, *st);
  if (!rc) rc = nb_safetensors_load(weights, *st, NULL, NB_SAFETENSORS_ALLOW_EXTRA);
  if (rc) rc = nb_error(rc, "--init-from: %s", nb_last_error());
  if (attached) {
    nb_status r2 = nb_model_set_lora(m, &keep);
    if (!rc) rc = r2;
  }
  if (rc) {
    nb_state_free(*st);
    *st = NULL;
  }
  return rc;
}

nb_status nabla_lora_write(const nb_model *m, const nb_state *st, const char *out_dir, char *path,
                           size_t cap) {
  path[0] = '\0';
  const nb_lora *l = nb_model_lora(m);
  if (!l) return NB_OK;
  snprintf(path, cap, "%s/lora.safetensors", out_dir);
  return nb_lora_save(path, st, l);
}

/* ---- nabla lora merge ---------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f, "usage: nabla lora merge MODEL WEIGHTS ADAPTERS -o MERGED\n"
             "\n"
             "Folds LoRA adapters (a lora.safetensors from `nabla train --lora-rank ...`)\n"
             "into base weights: W + (alpha / rank) B A for every adapted layer. MERGED\n"
             "holds every tensor of WEIGHTS with the adapted weights replaced; MODEL built\n"
             "without adapters on it computes what MODEL with the adapters computed.\n"
             "MERGED is checked against MODEL (a text model's vocab.txt is looked for\n"
             "beside WEIGHTS).\n");
}

/* A text model that takes its vocabulary from the data: from the
 * vocab.txt (or vocab.bpe) that `nabla train` wrote beside its weights. */
static nb_status vocab_beside(nb_model *m, const char *weights) {
  if (!nb_model_takes_vocab(m)) return NB_OK;
  char path[1100];
  nabla_vocab_beside(m, weights, path, sizeof path);
  nabla_text_vocab v;
  nb_status rc = nabla_vocab_load(m, path, &v);
  if (rc)
    rc = nb_error(rc, "%s takes its vocabulary from the data, and %s: %s", nb_model_source(m), path,
                  nb_last_error());
  if (!rc) rc = nb_model_set_vocab(m, nabla_vocab_size(&v));
  nabla_vocab_free(&v);
  return rc;
}

int nabla_cmd_lora(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "merge")) {
    fprintf(stderr, "nabla lora: unknown subcommand '%s' (merge)\n", argv[1]);
    return 2;
  }
  const char *pos[3] = {NULL, NULL, NULL}, *out = NULL;
  int npos = 0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "nabla lora merge: %s needs a file name\n", a);
        return 2;
      }
      out = argv[++i];
    } else if (a[0] == '-' || npos == 3) {
      fprintf(stderr, "nabla lora merge: unexpected argument '%s' (see --help)\n", a);
      return 2;
    } else {
      pos[npos++] = a;
    }
  }
  if (npos < 3 || !out) {
    usage(stderr);
    return 2;
  }
  nb_model *m = NULL;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_lora l;
  nb_safetensors *af = NULL;
  int pairs = 0;
  nb_status rc = nb_model_load(pos[0], &m);
  if (!rc) rc = nb_lora_read_config(pos[2], &l);
  if (!rc) rc = nb_safetensors_open(pos[2], &af);
  if (!rc) pairs = nb_safetensors_count(af) / 2;
  nb_safetensors_close(af);
  /* the model's variables: WEIGHTS must fit them before, MERGED after */
  if (!rc) rc = vocab_beside(m, pos[1]);
  if (!rc) rc = nb_backend_new("cpu", &be);
  if (!rc) rc = nb_state_new(be, &st);
  if (!rc) rc = create_vars(m, be, st);
  if (!rc) {
    rc = nb_safetensors_load(pos[1], st, NULL, NB_SAFETENSORS_ALLOW_EXTRA);
    if (rc) rc = nb_error(rc, "the weights do not fit %s: %s", pos[0], nb_last_error());
  }
  if (!rc) rc = nb_lora_merge_files(pos[1], pos[2], out);
  if (!rc) {
    rc = nb_safetensors_load(out, st, NULL, 0);
    if (rc) {
      rc = nb_error(rc, "the merged weights do not fit %s: %s", pos[0], nb_last_error());
      remove(out);
    }
  }
  int code = 0;
  if (rc) {
    fprintf(stderr, "nabla lora merge: %s\n", nb_last_error());
    code = 1;
  } else {
    printf("merged %d adapted layer%s (rank %d, alpha %g, targets '%s') from %s into %s: %s\n",
           pairs, pairs == 1 ? "" : "s", l.rank, (double)l.alpha, l.targets, pos[2], pos[1], out);
  }
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
  return code;
}
