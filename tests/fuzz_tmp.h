/* Temporary files for the fuzz targets whose readers take a path (model
 * files aside, every reader of tests/fuzz_io.h and tests/fuzz_data.h): one
 * directory per process, on /dev/shm when there is one (no disk writes per
 * input), removed at exit. Needs _POSIX_C_SOURCE 200809L (mkdtemp). */
#ifndef NB_FUZZ_TMP_H
#define NB_FUZZ_TMP_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fz_tmp_root[512];

static void fz_tmp_remove(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[1024];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat sb;
    if (!lstat(p, &sb) && S_ISDIR(sb.st_mode))
      fz_tmp_remove(p);
    else
      unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static void fz_tmp_cleanup(void) {
  if (fz_tmp_root[0]) fz_tmp_remove(fz_tmp_root);
}

/* The process's directory (created on first use); NULL if it cannot be. */
static const char *fz_tmp_dir(void) {
  if (fz_tmp_root[0]) return fz_tmp_root;
  struct stat sb;
  const char *env = getenv("TMPDIR");
  const char *base = !stat("/dev/shm", &sb) && S_ISDIR(sb.st_mode) && !access("/dev/shm", W_OK)
                         ? "/dev/shm"
                     : env && *env ? env
                                   : "/tmp";
  snprintf(fz_tmp_root, sizeof fz_tmp_root, "%s/nabla-fuzz.XXXXXX", base);
  if (!mkdtemp(fz_tmp_root)) {
    fz_tmp_root[0] = '\0';
    return NULL;
  }
  atexit(fz_tmp_cleanup);
  return fz_tmp_root;
}

/* "<dir>/<name>" in a static buffer per slot (0..7), so a few paths can be
 * held at once. */
static const char *fz_tmp_path(int slot, const char *name) {
  static char paths[8][600];
  const char *dir = fz_tmp_dir();
  if (!dir) return NULL;
  snprintf(paths[slot & 7], sizeof paths[0], "%s/%s", dir, name);
  return paths[slot & 7];
}

/* Writes n bytes to path; 0 on failure. */
static int fz_tmp_write(const char *path, const void *data, size_t n) {
  FILE *f = path ? fopen(path, "wb") : NULL;
  if (!f) return 0;
  int ok = fwrite(data, 1, n, f) == n;
  return fclose(f) == 0 && ok;
}

/* Reads a whole file into a malloc'ed buffer; NULL on failure. */
static uint8_t *fz_tmp_read(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  rewind(f);
  uint8_t *b = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
  if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
    free(b);
    b = NULL;
  }
  fclose(f);
  *n = b ? (size_t)sz : 0;
  return b;
}

#endif
