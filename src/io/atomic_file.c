/* Crash-safe whole-file writes: temp file beside the target, fsync, rename,
 * fsync of the directory. rename() is atomic on POSIX file systems, so a
 * reader (or a restarted run) sees the old file or the new one, never a mix. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nabla/io.h"

struct nb_atomic_file {
  char *path; /* target */
  char *tmp;  /* temporary file beside it */
  FILE *fp;
  uint64_t written;
};

/* A name unlikely to collide; O_EXCL below makes collisions harmless. */
static uint64_t tmp_seed(const void *salt, int attempt) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  nb_rng r;
  nb_rng_seed(&r, (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)getpid() << 12 ^
                      (uint64_t)(uintptr_t)salt ^ (uint64_t)attempt * 0x9e3779b97f4a7c15ull);
  return nb_rng_next(&r);
}

nb_status nb_atomic_open(const char *path, nb_atomic_file **out) {
  if (!path || !*path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_atomic_open: NULL argument");
  *out = NULL;
  nb_atomic_file *f = calloc(1, sizeof *f);
  size_t n = strlen(path);
  if (f) f->path = malloc(n + 1);
  if (f && f->path) f->tmp = malloc(n + 32);
  if (!f || !f->path || !f->tmp) {
    if (f) free(f->path);
    free(f);
    return nb_error(NB_ERR_OOM, "%s: out of memory", path);
  }
  memcpy(f->path, path, n + 1);
  int fd = -1;
  for (int attempt = 0; attempt < 16 && fd < 0; attempt++) {
    snprintf(f->tmp, n + 32, "%s.tmp.%016llx", path, (unsigned long long)tmp_seed(f, attempt));
    /* 0666 so the umask decides the final permissions, like fopen would */
    fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    nb_status s = nb_error(NB_ERR_IO, "%s: cannot create temporary file %s: %s", path, f->tmp,
                           strerror(errno));
    free(f->tmp);
    free(f->path);
    free(f);
    return s;
  }
  f->fp = fdopen(fd, "wb");
  if (!f->fp) {
    nb_status s = nb_error(NB_ERR_IO, "%s: fdopen: %s", f->tmp, strerror(errno));
    close(fd);
    unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    free(f);
    return s;
  }
  *out = f;
  return NB_OK;
}

FILE *nb_atomic_stream(nb_atomic_file *f) { return f ? f->fp : NULL; }

nb_status nb_atomic_write(nb_atomic_file *f, const void *data, size_t n) {
  if (!f || (n && !data)) return nb_error(NB_ERR_INVALID_ARG, "nb_atomic_write: NULL argument");
  if (n && fwrite(data, 1, n, f->fp) != n)
    return nb_error(NB_ERR_IO, "%s: write of %zu bytes at byte offset %llu failed: %s", f->tmp, n,
                    (unsigned long long)f->written, strerror(errno));
  f->written += n;
  return NB_OK;
}

static void discard(nb_atomic_file *f) {
  if (f->fp) fclose(f->fp);
  unlink(f->tmp);
  free(f->tmp);
  free(f->path);
  free(f);
}

void nb_atomic_abort(nb_atomic_file *f) {
  if (f) discard(f);
}

/* Directory part of path ("." when it has none). */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  size_t n = slash ? (size_t)(slash - path) : 1;
  if (slash == path) n = 1; /* "/file" lives in "/" */
  char *d = malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, slash ? path : ".", n);
  d[n] = '\0';
  return d;
}

nb_status nb_atomic_commit(nb_atomic_file *f) {
  if (!f) return nb_error(NB_ERR_INVALID_ARG, "nb_atomic_commit: NULL argument");
  const char *what = NULL;
  if (ferror(f->fp))
    what = "write";
  else if (fflush(f->fp))
    what = "flush";
  else if (fsync(fileno(f->fp)))
    what = "fsync";
  if (!what) {
    FILE *fp = f->fp;
    f->fp = NULL;
    if (fclose(fp)) what = "close";
  }
  if (what) {
    nb_status s = nb_error(NB_ERR_IO, "%s: %s of temporary file %s failed: %s (target unchanged)",
                           f->path, what, f->tmp, strerror(errno));
    discard(f);
    return s;
  }
  if (rename(f->tmp, f->path)) {
    nb_status s = nb_error(NB_ERR_IO, "%s: cannot rename %s over it: %s (target unchanged)",
                           f->path, f->tmp, strerror(errno));
    discard(f);
    return s;
  }
  /* The rename is only durable once the directory entry is on disk. */
  nb_status s = NB_OK;
  char *dir = dir_of(f->path);
  int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  /* Some file systems cannot fsync a directory (EINVAL): nothing to do there. */
  if (fd < 0 || (fsync(fd) && errno != EINVAL && errno != ENOTSUP))
    s = nb_error(NB_ERR_IO, "%s: written, but fsync of directory %s failed: %s", f->path,
                 dir ? dir : "?", strerror(errno));
  if (fd >= 0) close(fd);
  free(dir);
  free(f->tmp);
  free(f->path);
  free(f);
  return s;
}
