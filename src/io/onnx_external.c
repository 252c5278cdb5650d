/* ONNX external data: initializers whose bytes live in a file beside the
 * model (models over protobuf's 2 GB limit are saved this way).
 *
 * The location comes from an untrusted file, so it may only name a file
 * inside the model's directory: absolute paths and ".." components are
 * refused, and the resolved path (symlinks followed) must stay under the
 * resolved directory. Offset and length are checked against the external
 * file's size, so nothing larger than that file is ever allocated. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "onnx_internal.h"

static nb_status ext_fail(const char *file, size_t base, const char *tensor, const char *what,
                          const char *detail) {
  return nb_error(NB_ERR_FORMAT, "%s: byte %zu: tensor '%s': external data %s%s%s", file, base,
                  tensor, what, detail ? ": " : "", detail ? detail : "");
}

/* A whole non-negative decimal int64 ("" and NULL are absent). */
static int parse_u63(const char *s, int64_t *out) {
  if (!s || !*s) return 0;
  int64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    if (v > (INT64_MAX - (*s - '0')) / 10) return -1;
    v = v * 10 + (*s - '0');
  }
  *out = v;
  return 1;
}

/* 1 if `loc` is a relative path without "." or ".." escapes. Both slash
 * kinds separate components, so a model written on Windows is read too. */
static int safe_location(const char *loc) {
  if (!loc[0] || loc[0] == '/' || loc[0] == '\\') return 0;
  if (((loc[0] >= 'A' && loc[0] <= 'Z') || (loc[0] >= 'a' && loc[0] <= 'z')) && loc[1] == ':')
    return 0; /* C:\... */
  const char *p = loc;
  while (*p) {
    size_t n = strcspn(p, "/\\");
    if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
    p += n;
    if (*p) p++;
  }
  return 1;
}

nb_status ox_read_external(ox_arena *a, const char *file, size_t base, const char *tensor,
                           const ox_external *ext, uint64_t expect, const uint8_t **data,
                           size_t *len) {
  const char *loc = ext->location;
  if (!loc || !loc[0]) return ext_fail(file, base, tensor, "has no location", NULL);
  if (!safe_location(loc))
    return ext_fail(file, base, tensor,
                    "location must be a relative path inside the model's folder", loc);
  int64_t off = 0, length = -1;
  int r;
  if ((r = parse_u63(ext->offset, &off)) < 0)
    return ext_fail(file, base, tensor, "offset is not a non-negative integer", ext->offset);
  if ((r = parse_u63(ext->length, &length)) < 0)
    return ext_fail(file, base, tensor, "length is not a non-negative integer", ext->length);
  if (r == 0) length = -1; /* absent: to the end of the file */

  /* the model's directory, then the external file beside it */
  const char *slash = strrchr(file, '/');
  size_t dlen = slash ? (size_t)(slash - file) : 1;
  const char *dir = slash ? file : ".";
  if (slash && dlen == 0) dlen = 1; /* a model in "/" */
  size_t plen = dlen + 1 + strlen(loc) + 1;
  char *dpath = ox_alloc(a, dlen + 1), *path = ox_alloc(a, plen);
  if (!dpath || !path) return nb_error(NB_ERR_OOM, "onnx: out of memory");
  memcpy(dpath, dir, dlen);
  snprintf(path, plen, "%s/%s", dpath, loc);

  /* symlinks must not lead out of the model's folder either */
  char rdir[PATH_MAX], rpath[PATH_MAX];
  if (!realpath(dpath, rdir)) return nb_error(NB_ERR_IO, "%s: cannot resolve its folder", file);
  if (!realpath(path, rpath))
    return nb_error(NB_ERR_IO, "%s: tensor '%s': cannot open external data file %s: %s", file,
                    tensor, path, strerror(errno));
  size_t rl = strlen(rdir);
  if (strncmp(rpath, rdir, rl) != 0 ||
      (rpath[rl] != '/' && rpath[rl] != '\0' && strcmp(rdir, "/") != 0))
    return ext_fail(file, base, tensor, "file resolves outside the model's folder", loc);

  /* checked before opening too: opening a FIFO for reading would wait for
   * a writer forever */
  struct stat sb;
  if (stat(rpath, &sb) != 0 || !S_ISREG(sb.st_mode))
    return ext_fail(file, base, tensor, "location is not a regular file", loc);
  FILE *f = fopen(rpath, "rb");
  if (!f)
    return nb_error(NB_ERR_IO, "%s: tensor '%s': cannot open external data file %s: %s", file,
                    tensor, path, strerror(errno));
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return ext_fail(file, base, tensor, "location is not a regular file", loc);
  }
  uint64_t size = (uint64_t)sb.st_size;
  if ((uint64_t)off > size) {
    fclose(f);
    return nb_error(NB_ERR_FORMAT,
                    "%s: byte %zu: tensor '%s': external data offset %" PRId64
                    " is past the end of %s (%" PRIu64 " bytes)",
                    file, base, tensor, off, path, size);
  }
  if (length < 0) length = (int64_t)(size - (uint64_t)off);
  if ((uint64_t)length > size - (uint64_t)off) {
    fclose(f);
    return nb_error(NB_ERR_FORMAT,
                    "%s: byte %zu: tensor '%s': external data [%" PRId64 ", +%" PRId64
                    ") runs past the end of %s (%" PRIu64 " bytes)",
                    file, base, tensor, off, length, path, size);
  }
  if ((uint64_t)length != expect) {
    fclose(f);
    return nb_error(NB_ERR_FORMAT,
                    "%s: byte %zu: tensor '%s': external data holds %" PRId64
                    " bytes, its shape and type need %" PRIu64,
                    file, base, tensor, length, expect);
  }
  uint8_t *buf = ox_alloc(a, (size_t)length);
  if (!buf) {
    fclose(f);
    return nb_error(NB_ERR_OOM, "onnx: out of memory for %" PRId64 " bytes of %s", length, path);
  }
  int ok =
      fseeko(f, (off_t)off, SEEK_SET) == 0 && fread(buf, 1, (size_t)length, f) == (size_t)length;
  fclose(f);
  if (!ok) return nb_error(NB_ERR_IO, "%s: short read in external data file %s", file, path);
  *data = buf;
  *len = (size_t)length;
  return NB_OK;
}
