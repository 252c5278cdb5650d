/* mkdir -p, for log and checkpoint directories. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nabla/io.h"

static nb_status mkdir_one(const char *path, const char *full) {
  if (!mkdir(path, 0777)) return NB_OK;
  int err = errno;
  struct stat sb;
  if (err == EEXIST && !stat(path, &sb) && S_ISDIR(sb.st_mode)) return NB_OK;
  if (err == EEXIST)
    return nb_error(NB_ERR_IO, "%s: cannot create directory: %s exists and is not a directory",
                    full, path);
  return nb_error(NB_ERR_IO, "%s: cannot create directory %s: %s", full, path, strerror(err));
}

nb_status nb_mkdirs(const char *path) {
  if (!path || !*path) return nb_error(NB_ERR_INVALID_ARG, "nb_mkdirs: empty path");
  size_t n = strlen(path);
  char *p = malloc(n + 1);
  if (!p) return nb_error(NB_ERR_OOM, "%s: out of memory", path);
  memcpy(p, path, n + 1);
  nb_status s = NB_OK;
  /* create each prefix ending before a '/', then the whole path */
  for (size_t i = 1; i < n && !s; i++) {
    if (p[i] != '/' || p[i - 1] == '/') continue;
    p[i] = '\0';
    s = mkdir_one(p, path);
    p[i] = '/';
  }
  if (!s) s = mkdir_one(p, path);
  free(p);
  return s;
}
