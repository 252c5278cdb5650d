/* The tokenizer of a text model, as `nabla train`, `eval` and `generate`
 * use it: one token per distinct byte (nb_char_vocab, saved as vocab.txt)
 * or byte-level BPE ([net] tokenizer = bpe: nb_bpe, saved as vocab.bpe),
 * so the three commands share one way to find, build, save and apply it. */
#ifndef NABLA_TEXT_VOCAB_H
#define NABLA_TEXT_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "nabla/nabla.h"

typedef struct nabla_text_vocab {
  int bpe;             /* 1: tok, 0: chars */
  nb_char_vocab chars; /* one id per distinct byte */
  nb_bpe *tok;         /* byte-level BPE, owned */
} nabla_text_vocab;

/* The vocabulary file's name for model m: "vocab.bpe" or "vocab.txt". */
const char *nabla_vocab_name(const nb_model *m);

/* Writes DIR/NAME to out, DIR being the folder of `file` ("" for none). */
void nabla_vocab_beside(const nb_model *m, const char *file, char *out, size_t cap);

/* Reads the vocabulary file written by nabla_vocab_save for model m. */
nb_status nabla_vocab_load(const nb_model *m, const char *path, nabla_text_vocab *v);

/* A new vocabulary for model m from text[0..n): the text's bytes; or for
 * BPE, [net] tokenizer_file when set, else tokenizer_vocab tokens learned
 * from the training part of the text (its first 90% of bytes, so the
 * validation text stays unseen). */
nb_status nabla_vocab_build(const nb_model *m, const char *text, size_t n, nabla_text_vocab *v);

/* The number of token ids. */
int nabla_vocab_size(const nabla_text_vocab *v);

/* Encodes text[0..n) into ids (room for n) and sets *n_ids; a byte outside
 * a character vocabulary is an error naming it. */
nb_status nabla_vocab_encode(const nabla_text_vocab *v, const char *text, size_t n, int32_t *ids,
                             size_t *n_ids);

/* The bytes of token `id` (owned by v): one byte, or a BPE token's bytes,
 * which may end inside a UTF-8 character. */
nb_status nabla_vocab_token(const nabla_text_vocab *v, int32_t id, const char **bytes, size_t *len);

nb_status nabla_vocab_save(const nabla_text_vocab *v, const char *path);
void nabla_vocab_free(nabla_text_vocab *v);

#endif
