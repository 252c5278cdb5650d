/* `nabla tokenizer`: train a byte-level BPE vocabulary on a text file, and
 * encode or decode with one (docs/data.md, "Tokenizers"). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla/nabla.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: nabla tokenizer train FILE --vocab N -o VOCAB [--special STR]...\n"
          "       nabla tokenizer encode VOCAB (--text STR | --file FILE) [--special] [--quiet]\n"
          "       nabla tokenizer decode VOCAB ID...\n"
          "\n"
          "train   learns a byte-level BPE vocabulary of N ids (256 bytes + N - 256 merges,\n"
          "        then the --special tokens, e.g. '<|endoftext|>') from FILE, writes it\n"
          "        to VOCAB, and reports the time and bytes per token on FILE\n"
          "encode  prints the ids of the text, then bytes, tokens and bytes per token;\n"
          "        --special turns registered special-token strings into their ids,\n"
          "        --quiet prints only the counts\n"
          "decode  writes the bytes of the ids to standard output\n");
}

static int fail(const char *what) {
  fprintf(stderr, "nabla tokenizer: %s: %s\n", what, nb_last_error());
  return 1;
}

/* Encodes text and prints "N bytes -> M tokens (R bytes/token)"; with
 * print_ids the ids come first, on one line. */
static int encode_report(const nb_bpe *t, const char *text, size_t n, int flags, int print_ids,
                         double *seconds) {
  int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
  if (!ids) {
    fprintf(stderr, "nabla tokenizer: out of memory for %zu ids\n", n);
    return 1;
  }
  size_t n_ids;
  double t0 = now();
  if (nb_bpe_encode(t, text, n, flags, ids, &n_ids)) {
    free(ids);
    return fail("encode");
  }
  if (seconds) *seconds = now() - t0;
  if (print_ids) {
    for (size_t i = 0; i < n_ids; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    printf("\n");
  }
  printf("%zu bytes -> %zu tokens (%.3f bytes/token)", n, n_ids,
         n_ids ? (double)n / (double)n_ids : 0.0);
  if (seconds) printf(" in %.3f s", *seconds);
  printf("\n");
  free(ids);
  return 0;
}

static int cmd_train(int argc, char **argv) {
  const char *file = NULL, *out = NULL;
  long vocab = 0;
  const char *special[64];
  int n_special = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--vocab") && has) {
      char *end;
      errno = 0;
      vocab = strtol(argv[++i], &end, 10);
      if (errno || *end || end == argv[i] || vocab < 256 || vocab > NB_BPE_MAX_VOCAB) {
        fprintf(stderr, "nabla tokenizer: --vocab '%s' is not a whole number in [256, %d]\n",
                argv[i], NB_BPE_MAX_VOCAB);
        return 2;
      }
    } else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && has) {
      out = argv[++i];
    } else if (!strcmp(a, "--special") && has) {
      if (n_special == 64) {
        fprintf(stderr, "nabla tokenizer: at most 64 --special tokens\n");
        return 2;
      }
      special[n_special++] = argv[++i];
    } else if (a[0] == '-' || file) {
      fprintf(stderr, "nabla tokenizer train: unexpected argument '%s' (try --help)\n", a);
      return 2;
    } else {
      file = a;
    }
  }
  if (!file || !vocab || !out) {
    fprintf(stderr, "nabla tokenizer train: FILE, --vocab N and -o VOCAB are needed\n");
    return 2;
  }
  char *text;
  size_t n;
  if (nb_text_read_file(file, &text, &n)) return fail("read");
  nb_bpe *t;
  double t0 = now();
  if (nb_bpe_train(text, n, (int)vocab, &t)) {
    free(text);
    return fail("train");
  }
  double train_s = now() - t0;
  int rc = 0;
  for (int k = 0; k < n_special && !rc; k++)
    if (nb_bpe_add_special(t, special[k], NULL)) rc = fail("--special");
  if (!rc && nb_bpe_save(t, out)) rc = fail("save");
  if (!rc) {
    printf("%s: %zu bytes; learned %d merges in %.3f s; %d ids (256 bytes, %d merges, %d "
           "special)\n",
           file, n, nb_bpe_num_merges(t), train_s, nb_bpe_vocab_size(t), nb_bpe_num_merges(t),
           n_special);
    if (nb_bpe_num_merges(t) < (int)vocab - 256)
      printf("note: the text has no more pairs to merge: fewer ids than --vocab %ld\n", vocab);
    printf("encoding %s: ", file);
    double enc_s;
    rc = encode_report(t, text, n, 0, 0, &enc_s);
    if (!rc) printf("wrote %s\n", out);
  }
  nb_bpe_free(t);
  free(text);
  return rc;
}

static int cmd_encode(int argc, char **argv) {
  const char *vocab = NULL, *text = NULL, *file = NULL;
  int flags = 0, quiet = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (!strcmp(a, "--text") && has)
      text = argv[++i];
    else if (!strcmp(a, "--file") && has)
      file = argv[++i];
    else if (!strcmp(a, "--special"))
      flags |= NB_BPE_ALLOW_SPECIAL;
    else if (!strcmp(a, "--quiet"))
      quiet = 1;
    else if (a[0] == '-' || vocab) {
      fprintf(stderr, "nabla tokenizer encode: unexpected argument '%s' (try --help)\n", a);
      return 2;
    } else
      vocab = a;
  }
  if (!vocab || !text == !file) {
    fprintf(stderr, "nabla tokenizer encode: VOCAB and one of --text or --file are needed\n");
    return 2;
  }
  nb_bpe *t;
  if (nb_bpe_load(vocab, &t)) return fail("load");
  char *buf = NULL;
  size_t n;
  int rc = 0;
  if (file) {
    if (nb_text_read_file(file, &buf, &n)) rc = fail("read");
  } else {
    n = strlen(text);
  }
  if (!rc) rc = encode_report(t, file ? buf : text, n, flags, !quiet, NULL);
  free(buf);
  nb_bpe_free(t);
  return rc;
}

static int cmd_decode(int argc, char **argv) {
  if (argc < 1 || argv[0][0] == '-') {
    fprintf(stderr, "nabla tokenizer decode: VOCAB and ids are needed\n");
    return 2;
  }
  int32_t *ids = malloc(((size_t)argc + 1) * sizeof *ids);
  if (!ids) return 1;
  for (int i = 1; i < argc; i++) {
    char *end;
    errno = 0;
    long v = strtol(argv[i], &end, 10);
    if (errno || *end || end == argv[i] || v < INT32_MIN || v > INT32_MAX) {
      fprintf(stderr, "nabla tokenizer decode: '%s' is not an id\n", argv[i]);
      free(ids);
      return 2;
    }
    ids[i - 1] = (int32_t)v;
  }
  nb_bpe *t;
  int rc = 0;
  char *text = NULL;
  size_t len;
  if (nb_bpe_load(argv[0], &t)) {
    rc = fail("load");
  } else {
    if (nb_bpe_decode(t, ids, (size_t)argc - 1, &text, &len))
      rc = fail("decode");
    else
      fwrite(text, 1, len, stdout);
    nb_bpe_free(t);
  }
  free(text);
  free(ids);
  return rc;
}

int nabla_cmd_tokenizer(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    }
  }
  if (!strcmp(argv[1], "train")) return cmd_train(argc - 2, argv + 2);
  if (!strcmp(argv[1], "encode")) return cmd_encode(argc - 2, argv + 2);
  if (!strcmp(argv[1], "decode")) return cmd_decode(argc - 2, argv + 2);
  fprintf(stderr, "nabla tokenizer: unknown subcommand '%s' (train, encode, decode)\n", argv[1]);
  return 2;
}
