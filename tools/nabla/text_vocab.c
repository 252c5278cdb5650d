/* A text model's tokenizer (text_vocab.h): nb_char_vocab or nb_bpe behind
 * one interface for the train, eval and generate commands. */
#include "text_vocab.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

const char *nabla_vocab_name(const nb_model *m) {
  return nb_model_tokenizer_bpe(m) ? "vocab.bpe" : "vocab.txt";
}

void nabla_vocab_beside(const nb_model *m, const char *file, char *out, size_t cap) {
  const char *slash = strrchr(file, '/');
  snprintf(out, cap, "%.*s%s%s", slash ? (int)(slash - file) : 0, file, slash ? "/" : "",
           nabla_vocab_name(m));
}

nb_status nabla_vocab_load(const nb_model *m, const char *path, nabla_text_vocab *v) {
  memset(v, 0, sizeof *v);
  v->bpe = nb_model_tokenizer_bpe(m);
  return v->bpe ? nb_bpe_load(path, &v->tok) : nb_char_vocab_load(path, &v->chars);
}

nb_status nabla_vocab_build(const nb_model *m, const char *text, size_t n, nabla_text_vocab *v) {
  memset(v, 0, sizeof *v);
  v->bpe = nb_model_tokenizer_bpe(m);
  if (!v->bpe) return nb_char_vocab_build(text, n, &v->chars);
  const char *file = nb_model_tokenizer_file(m);
  if (file) {
    nb_status rc = nb_bpe_load(file, &v->tok);
    if (rc)
      return nb_error(rc, "%s (the vocabulary [net] tokenizer_file of %s names)", nb_last_error(),
                      nb_model_source(m));
    return NB_OK;
  }
  /* the same integer split as nb_token_windows_init, over bytes */
  size_t n_train = n / 10 * 9 + n % 10 * 9 / 10;
  return nb_bpe_train(text, n_train ? n_train : n, (int)nb_model_tokenizer_vocab(m), &v->tok);
}

int nabla_vocab_size(const nabla_text_vocab *v) {
  return v->bpe ? nb_bpe_vocab_size(v->tok) : v->chars.size;
}

nb_status nabla_vocab_encode(const nabla_text_vocab *v, const char *text, size_t n, int32_t *ids,
                             size_t *n_ids) {
  if (v->bpe) return nb_bpe_encode(v->tok, text, n, 0, ids, n_ids);
  /* name the first byte the vocabulary lacks: a prompt is typed by a person */
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)text[i];
    if (v->chars.id[b] >= 0) continue;
    char shown[16];
    if (isprint(b))
      snprintf(shown, sizeof shown, "'%c'", b);
    else
      snprintf(shown, sizeof shown, "byte 0x%02x", b);
    return nb_error(NB_ERR_INVALID_ARG,
                    "the character %s at position %zu is not in the vocabulary of %d characters",
                    shown, i, v->chars.size);
  }
  *n_ids = n;
  return nb_char_encode(&v->chars, text, n, ids);
}

nb_status nabla_vocab_token(const nabla_text_vocab *v, int32_t id, const char **bytes,
                            size_t *len) {
  if (v->bpe) return nb_bpe_token(v->tok, id, bytes, len);
  if (id < 0 || id >= v->chars.size)
    return nb_error(NB_ERR_INVALID_ARG, "token %d is outside the vocabulary of %d", (int)id,
                    v->chars.size);
  *bytes = (const char *)&v->chars.bytes[id];
  *len = 1;
  return NB_OK;
}

nb_status nabla_vocab_save(const nabla_text_vocab *v, const char *path) {
  return v->bpe ? nb_bpe_save(v->tok, path) : nb_char_vocab_save(&v->chars, path);
}

void nabla_vocab_free(nabla_text_vocab *v) {
  nb_bpe_free(v->tok);
  v->tok = NULL;
}
