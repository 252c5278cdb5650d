/* CSV training logs. A row is assembled in memory and written with one
 * fwrite + fflush, so the file only ever holds whole rows (unless the
 * process dies inside that write, which NB_CSVLOG_APPEND repairs). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nabla/io.h"

struct nb_csvlog {
  FILE *fp;
  char *path;
  int ncols, cells; /* cells of the row being built */
  char *row;
  size_t len, cap;
};

static int reserve(nb_csvlog *log, size_t extra) {
  if (log->row && log->len + extra + 1 <= log->cap) return 1;
  size_t cap = log->cap ? log->cap : 256;
  while (cap < log->len + extra + 1) cap *= 2;
  char *r = realloc(log->row, cap);
  if (!r) return 0;
  log->row = r;
  log->cap = cap;
  return 1;
}

static nb_status add_cell(nb_csvlog *log, const char *text, int may_quote) {
  if (log->cells >= log->ncols) {
    log->len = 0;
    log->cells = 0;
    return nb_error(NB_ERR_INVALID_ARG, "%s: row has more than %d cells (row dropped)", log->path,
                    log->ncols);
  }
  size_t n = strlen(text);
  /* worst case: separator, two quotes, every character doubled */
  if (!reserve(log, 2 * n + 3)) return nb_error(NB_ERR_OOM, "%s: out of memory", log->path);
  if (log->cells) log->row[log->len++] = ',';
  int quote = may_quote && strpbrk(text, ",\"\r\n") != NULL;
  if (quote) log->row[log->len++] = '"';
  for (size_t i = 0; i < n; i++) {
    if (text[i] == '"') log->row[log->len++] = '"'; /* RFC 4180: "" inside quotes */
    log->row[log->len++] = text[i];
  }
  if (quote) log->row[log->len++] = '"';
  log->row[log->len] = '\0';
  log->cells++;
  return NB_OK;
}

nb_status nb_csvlog_str(nb_csvlog *log, const char *value) {
  if (!log || !value) return nb_error(NB_ERR_INVALID_ARG, "nb_csvlog_str: NULL argument");
  return add_cell(log, value, 1);
}

nb_status nb_csvlog_num(nb_csvlog *log, double value) {
  if (!log) return nb_error(NB_ERR_INVALID_ARG, "nb_csvlog_num: NULL argument");
  char buf[40];
  if (isnan(value))
    snprintf(buf, sizeof buf, "nan");
  else if (isinf(value))
    snprintf(buf, sizeof buf, "%s", value > 0 ? "inf" : "-inf");
  else
    /* shortest of 15..17 digits that reads back exactly: 0.1 stays "0.1" */
    for (int digits = 15; digits <= 17; digits++) {
      snprintf(buf, sizeof buf, "%.*g", digits, value);
      if (strtod(buf, NULL) == value) break;
    }
  return add_cell(log, buf, 0);
}

static nb_status write_line(nb_csvlog *log) {
  if (!reserve(log, 1)) return nb_error(NB_ERR_OOM, "%s: out of memory", log->path);
  log->row[log->len++] = '\n';
  size_t n = log->len;
  log->len = 0;
  log->cells = 0;
  if (fwrite(log->row, 1, n, log->fp) != n || fflush(log->fp))
    return nb_error(NB_ERR_IO, "%s: write failed: %s", log->path, strerror(errno));
  return NB_OK;
}

nb_status nb_csvlog_end_row(nb_csvlog *log) {
  if (!log) return nb_error(NB_ERR_INVALID_ARG, "nb_csvlog_end_row: NULL argument");
  if (log->cells != log->ncols) {
    int got = log->cells;
    log->len = 0;
    log->cells = 0;
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: row has %d cells but the log has %d columns (row dropped)", log->path, got,
                    log->ncols);
  }
  return write_line(log);
}

nb_status nb_csvlog_row(nb_csvlog *log, const double *values, int n) {
  if (!log || (n && !values)) return nb_error(NB_ERR_INVALID_ARG, "nb_csvlog_row: NULL argument");
  if (n != log->ncols)
    return nb_error(NB_ERR_INVALID_ARG, "%s: row has %d values but the log has %d columns",
                    log->path, n, log->ncols);
  log->len = 0;
  log->cells = 0;
  for (int i = 0; i < n; i++) {
    nb_status s = nb_csvlog_num(log, values[i]);
    if (s) return s;
  }
  return write_line(log);
}

nb_status nb_csvlog_close(nb_csvlog *log) {
  if (!log) return NB_OK;
  nb_status s = NB_OK;
  if (log->fp && fclose(log->fp))
    s = nb_error(NB_ERR_IO, "%s: close failed: %s", log->path, strerror(errno));
  free(log->row);
  free(log->path);
  free(log);
  return s;
}

/* Reopens an existing log whose first line is `header` (len bytes, ending in
 * '\n') and cuts a torn last row. *kept = 0 when the file is empty or absent. */
static nb_status reopen(nb_csvlog *log, const char *header, size_t len, int *kept) {
  *kept = 0;
  FILE *fp = fopen(log->path, "r+b");
  if (!fp)
    return errno == ENOENT ? NB_OK
                           : nb_error(NB_ERR_IO, "%s: cannot open: %s", log->path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(fp), &sb) || sb.st_size == 0) {
    fclose(fp);
    return NB_OK;
  }
  char *first = malloc(len);
  size_t got = first ? fread(first, 1, len, fp) : 0;
  int same = first && got == len && !memcmp(first, header, len);
  free(first);
  if (!same) {
    fclose(fp);
    return nb_error(NB_ERR_FORMAT,
                    "%s: cannot append: its first line (byte offset 0) is not the header '%.*s'",
                    log->path, (int)len - 1, header);
  }
  /* find the last '\n' scanning back from the end, one block at a time */
  off_t end = sb.st_size;
  char block[4096];
  while (end > (off_t)len) {
    off_t start = end - (off_t)sizeof block > (off_t)len ? end - (off_t)sizeof block : (off_t)len;
    size_t n = (size_t)(end - start);
    if (fseeko(fp, start, SEEK_SET) || fread(block, 1, n, fp) != n) break;
    size_t i = n;
    while (i > 0 && block[i - 1] != '\n') i--;
    if (i > 0) {
      end = start + (off_t)i;
      break;
    }
    end = start;
  }
  if (end < sb.st_size && ftruncate(fileno(fp), end)) {
    fclose(fp);
    return nb_error(NB_ERR_IO, "%s: cannot cut the unfinished last row at byte offset %lld: %s",
                    log->path, (long long)end, strerror(errno));
  }
  if (fseeko(fp, 0, SEEK_END)) {
    fclose(fp);
    return nb_error(NB_ERR_IO, "%s: seek failed: %s", log->path, strerror(errno));
  }
  log->fp = fp;
  *kept = 1;
  return NB_OK;
}

nb_status nb_csvlog_open(const char *path, int ncols, const char *const *columns, unsigned flags,
                         nb_csvlog **out) {
  if (!path || !columns || !out || ncols <= 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_csvlog_open: NULL argument or no columns");
  *out = NULL;
  nb_csvlog *log = calloc(1, sizeof *log);
  size_t plen = strlen(path) + 1;
  if (!log || !(log->path = malloc(plen))) {
    free(log);
    return nb_error(NB_ERR_OOM, "%s: out of memory", path);
  }
  memcpy(log->path, path, plen);
  log->ncols = ncols;
  nb_status s = NB_OK;
  for (int i = 0; i < ncols && !s; i++)
    s = columns[i] ? nb_csvlog_str(log, columns[i])
                   : nb_error(NB_ERR_INVALID_ARG, "%s: column %d has no name", path, i);
  int kept = 0;
  if (!s && reserve(log, 1)) {
    log->row[log->len] = '\n';
    if (flags & NB_CSVLOG_APPEND) s = reopen(log, log->row, log->len + 1, &kept);
  } else if (!s) {
    s = nb_error(NB_ERR_OOM, "%s: out of memory", path);
  }
  if (!s && !kept) {
    if (!(log->fp = fopen(path, "wb")))
      s = nb_error(NB_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    else
      s = write_line(log);
  }
  log->len = 0;
  log->cells = 0;
  if (s) {
    nb_csvlog_close(log);
    return s;
  }
  *out = log;
  return NB_OK;
}
