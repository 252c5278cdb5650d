/* The BPE tokenizer's representation, shared by its core (tokenizer_bpe.c),
 * its trainer (tokenizer_bpe_train.c) and its file reader/writer
 * (tokenizer_bpe_file.c). Not part of the public API. */
#ifndef NB_BPE_INTERNAL_H
#define NB_BPE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "nabla/data.h"

/* The name of the pre-split rule of nb_bpe_chunk_len, as vocabulary files
 * record it. */
#define NB_BPE_SPLIT_NAME "gpt4-bytes"

/* Most bytes all tokens together may expand to. Tokens can double in length
 * with every merge ((a,a), (256,256), ...), so a hostile vocabulary file of
 * a few dozen lines could otherwise ask for exabytes. */
#define NB_BPE_MAX_TOKEN_BYTES ((int64_t)64 << 20)

struct nb_bpe {
  int n_merges, max_merges;
  int32_t *merges; /* 2 * max_merges; merge r joins merges[2r], merges[2r + 1] */
  /* bytes of id i < 256 + n_merges: tok_bytes[tok_off[i] .. tok_off[i + 1]) */
  int64_t *tok_off; /* 256 + max_merges + 1 */
  char *tok_bytes;
  int64_t tok_cap;
  int64_t tok_limit; /* most bytes all tokens may total: NB_BPE_MAX_TOKEN_BYTES or less */
  /* (a, b) -> rank, open addressing with linear probing; key 0 is empty
   * (stored keys are (a << 32 | b) + 1, never 0) */
  uint64_t *map_key;
  int32_t *map_rank;
  size_t map_mask;
  int n_special;
  char **special; /* NUL-terminated names; id 256 + n_merges + k */
  size_t *special_len;
  unsigned char special_first[256]; /* 1 for bytes that start a special token */
};

/* A tokenizer with the 256 byte tokens and room for max_merges merges
 * (the capacity grows only through nb_bpe_reserve), tok_limit at
 * NB_BPE_MAX_TOKEN_BYTES. NULL when out of memory. */
nb_bpe *nb_bpe_alloc(int max_merges);

/* Grows the room for merges to max_merges (at most NB_BPE_MAX_VOCAB - 256;
 * a smaller value does nothing), rehashing the rank map: 1, or 0 when out
 * of memory or past the limit, with t unchanged but for spare capacity. */
int nb_bpe_reserve(nb_bpe *t, int max_merges);

/* What nb_bpe_push_merge found. */
typedef enum nb_bpe_push {
  NB_BPE_PUSHED = 0,
  NB_BPE_PUSH_RANGE,    /* an id is not below 256 + n_merges */
  NB_BPE_PUSH_DUP,      /* the pair is already a merge (its rank in *dup_rank) */
  NB_BPE_PUSH_TOO_LONG, /* the tokens would pass t->tok_limit */
  NB_BPE_PUSH_FULL,     /* max_merges reached, or special tokens exist */
  NB_BPE_PUSH_OOM,
} nb_bpe_push;

/* Appends merge (a, b) as id 256 + n_merges. */
nb_bpe_push nb_bpe_push_merge(nb_bpe *t, int32_t a, int32_t b, int *dup_rank);

/* Rank of merge (a, b), or -1 when the pair is not a merge. */
int32_t nb_bpe_rank(const nb_bpe *t, int32_t a, int32_t b);

/* Why name[0..len) cannot become a special token of t (a static string), or
 * NULL when it can. */
const char *nb_bpe_special_problem(const nb_bpe *t, const char *name, size_t len);

#endif
