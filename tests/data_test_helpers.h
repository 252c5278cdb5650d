/* Helpers for the data tests (tests/test_data_*.c): a scratch directory
 * that is removed afterwards, writing files, and checking that a call fails
 * with a message holding given substrings. Header-only so that adding it
 * needs no build change. */
#ifndef NB_DATA_TEST_HELPERS_H
#define NB_DATA_TEST_HELPERS_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"

/* Creates a fresh directory under $TMPDIR (or /tmp) into buf. */
static inline void dt_mkdtemp(char *buf, size_t cap) {
  const char *base = getenv("TMPDIR");
  snprintf(buf, cap, "%s/nb_data_test_XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(buf)) fail_msg("mkdtemp %s failed", buf);
}

static inline int dt_rm_one(const char *p, const struct stat *s, int flag, struct FTW *f) {
  (void)s;
  (void)flag;
  (void)f;
  return remove(p);
}

/* rm -rf dir */
static inline void dt_rmtree(const char *dir) { nftw(dir, dt_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* buf = dir/name */
static inline const char *dt_path(char *buf, size_t cap, const char *dir, const char *name) {
  int k = snprintf(buf, cap, "%s/%s", dir, name);
  if (k < 0 || (size_t)k >= cap) fail_msg("path %s/%s too long", dir, name);
  return buf;
}

static inline void dt_mkdir(const char *dir, const char *name) {
  char p[4096];
  dt_path(p, sizeof p, dir, name);
  if (mkdir(p, 0755) != 0) fail_msg("mkdir %s failed", p);
}

/* Writes n bytes to dir/name. */
static inline void dt_write(const char *dir, const char *name, const void *data, size_t n) {
  char p[4096];
  dt_path(p, sizeof p, dir, name);
  FILE *f = fopen(p, "wb");
  if (!f) fail_msg("cannot create %s", p);
  if (n && fwrite(data, 1, n, f) != n) fail_msg("cannot write %s", p);
  fclose(f);
}

static inline void dt_write_str(const char *dir, const char *name, const char *s) {
  dt_write(dir, name, s, strlen(s));
}

/* Reads dir/name whole; *n receives the size. Caller frees. */
static inline unsigned char *dt_read(const char *dir, const char *name, size_t *n) {
  char p[4096];
  dt_path(p, sizeof p, dir, name);
  FILE *f = fopen(p, "rb");
  if (!f) fail_msg("cannot open %s", p);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)len + 1);
  if (fread(b, 1, (size_t)len, f) != (size_t)len) fail_msg("cannot read %s", p);
  fclose(f);
  *n = (size_t)len;
  return b;
}

/* Keeps the first n bytes of dir/name. */
static inline void dt_truncate(const char *dir, const char *name, size_t n) {
  size_t len;
  unsigned char *b = dt_read(dir, name, &len);
  dt_write(dir, name, b, n < len ? n : len);
  free(b);
}

/* The call must fail with `want` (any error if NB_OK) and leave a message
 * holding every substring of the NULL-terminated list. */
static inline void dt_expect_err(const char *file, int line, const char *expr, nb_status want,
                                 nb_status got, ...) {
  if (got == NB_OK) fail_msg("%s:%d: %s succeeded, expected an error", file, line, expr);
  const char *msg = nb_last_error();
  if (want != NB_OK && got != want)
    fail_msg("%s:%d: %s gave \"%s\" (%s), expected \"%s\"", file, line, expr, nb_status_name(got),
             msg, nb_status_name(want));
  if (!*msg) fail_msg("%s:%d: %s: empty error message", file, line, expr);
  va_list ap;
  va_start(ap, got);
  for (const char *sub = va_arg(ap, const char *); sub; sub = va_arg(ap, const char *))
    if (!strstr(msg, sub))
      fail_msg("%s:%d: %s: message \"%s\" lacks \"%s\"", file, line, expr, msg, sub);
  va_end(ap);
}

#define DT_ERR(want, expr, ...)                                                                    \
  dt_expect_err(__FILE__, __LINE__, #expr, (want), (expr), __VA_ARGS__, (const char *)NULL)

#endif
