/* CSV tables: a header row, numeric feature columns and one label column.
 * The file is read whole and tokenised in place (fields become
 * NUL-terminated strings inside the buffer), so a row costs no allocation.
 * Labels are kept as strings until every row is read, because whether they
 * are integer ids or class names is decided by all of them together. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"

typedef struct {
  char *s; /* NUL-terminated, inside the parser's buffer */
  int line, col;
} field;

typedef struct {
  const char *path;
  char *buf;
  size_t len, pos, line_start;
  int line;
  char delim;
  field *f;
  int nf, cap;
} parser;

static nb_status read_file(const char *path, char **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  nb_status st = b ? NB_OK : nb_error(NB_ERR_OOM, "%s: out of memory", path);
  while (!st) {
    if (n + 1 >= cap) {
      char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(b, cap * 2);
      if (!nb) {
        st = nb_error(NB_ERR_OOM, "%s: out of memory after %zu bytes", path, n);
        break;
      }
      b = nb;
      cap *= 2;
    }
    size_t r = fread(b + n, 1, cap - 1 - n, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) st = nb_error(NB_ERR_IO, "%s: read error at byte %zu", path, n);
      break;
    }
  }
  fclose(f);
  if (st) {
    free(b);
    return st;
  }
  b[n] = '\0';
  *buf = b;
  *len = n;
  return NB_OK;
}

static int col_of(const parser *p, size_t at) { return (int)(at - p->line_start) + 1; }

static nb_status push_field(parser *p, char *s, int line, int col) {
  if (p->nf == p->cap) {
    int cap = p->cap ? p->cap * 2 : 16;
    field *f = realloc(p->f, (size_t)cap * sizeof *f);
    if (!f) return nb_error(NB_ERR_OOM, "%s:%d: out of memory", p->path, line);
    p->f = f;
    p->cap = cap;
  }
  p->f[p->nf++] = (field){s, line, col};
  return NB_OK;
}

static void newline(parser *p, size_t next) {
  p->line++;
  p->line_start = next;
}

/* Reads the next non-blank record into p->f; *got = 0 at the end. */
static nb_status read_record(parser *p, int *got) {
  char *b = p->buf;
  *got = 0;
  p->nf = 0;
  for (;;) { /* blank lines */
    if (p->pos >= p->len) return NB_OK;
    if (b[p->pos] == '\n') {
      newline(p, ++p->pos);
    } else if (b[p->pos] == '\r') {
      p->pos += p->pos + 1 < p->len && b[p->pos + 1] == '\n' ? 2 : 1;
      newline(p, p->pos);
    } else {
      break;
    }
  }
  for (;;) {
    const int line = p->line, col = col_of(p, p->pos);
    char *start;
    int term; /* the character after the field, -1 at the end of the file */
    size_t i = p->pos;
    while (i < p->len && (b[i] == ' ' || b[i] == '\t') && b[i] != p->delim) i++;
    if (i < p->len && b[i] == '"') {
      /* unescape in place: the write position trails the read position */
      size_t r = i + 1, w = i;
      for (;;) {
        if (r >= p->len)
          return nb_error(NB_ERR_FORMAT, "%s:%d:%d: quoted field is never closed (expected '\"')",
                          p->path, line, col);
        if (b[r] == '"') {
          if (r + 1 < p->len && b[r + 1] == '"') {
            b[w++] = '"';
            r += 2;
            continue;
          }
          r++;
          break;
        }
        if (b[r] == '\n') newline(p, r + 1);
        b[w++] = b[r++];
      }
      while (r < p->len && (b[r] == ' ' || b[r] == '\t') && b[r] != p->delim) r++;
      term = r < p->len ? (unsigned char)b[r] : -1;
      if (term != -1 && term != p->delim && term != '\n' && term != '\r')
        return nb_error(NB_ERR_FORMAT,
                        "%s:%d:%d: expected '%c' or the end of the line after a closing quote, "
                        "found '%c'",
                        p->path, p->line, col_of(p, r), p->delim, b[r]);
      b[w] = '\0';
      start = b + i;
      p->pos = r;
    } else {
      size_t e = i;
      while (e < p->len && b[e] != p->delim && b[e] != '\n' && b[e] != '\r') e++;
      term = e < p->len ? (unsigned char)b[e] : -1;
      p->pos = e;
      while (e > i && (b[e - 1] == ' ' || b[e - 1] == '\t')) e--;
      b[e] = '\0'; /* at most the terminator, already remembered in term */
      start = b + i;
    }
    nb_status st = push_field(p, start, line, col);
    if (st) return st;
    if (term == p->delim) {
      p->pos++;
      continue;
    }
    if (term == '\r')
      p->pos += p->pos + 1 < p->len && b[p->pos + 1] == '\n' ? 2 : 1;
    else if (term == '\n')
      p->pos++;
    if (term != -1) newline(p, p->pos);
    *got = 1;
    return NB_OK;
  }
}

/* A string -> class id table (open addressing) for string labels. */
typedef struct {
  const char **keys;
  int *ids;
  size_t cap, count;
} class_table;

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static int table_find(const class_table *t, const char *s) {
  if (!t->cap) return -1;
  for (size_t i = hash_str(s) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
    if (!t->keys[i]) return -1;
    if (!strcmp(t->keys[i], s)) return t->ids[i];
  }
}

/* Inserts a key known to be absent; the table has room. */
static void table_put(class_table *t, const char *s, int id) {
  size_t i = hash_str(s) & (t->cap - 1);
  while (t->keys[i]) i = (i + 1) & (t->cap - 1);
  t->keys[i] = s;
  t->ids[i] = id;
  t->count++;
}

/* Inserts an absent key, growing the table to keep it at most half full.
 * Returns 0 when out of memory. */
static int table_add(class_table *t, const char *s, int id) {
  if (2 * (t->count + 1) > t->cap) {
    class_table g = {NULL, NULL, t->cap ? t->cap * 2 : 64, 0};
    g.keys = calloc(g.cap, sizeof *g.keys);
    g.ids = calloc(g.cap, sizeof *g.ids);
    if (!g.keys || !g.ids) {
      free(g.keys);
      free(g.ids);
      return 0;
    }
    for (size_t i = 0; i < t->cap; i++)
      if (t->keys[i]) table_put(&g, t->keys[i], t->ids[i]);
    free(t->keys);
    free(t->ids);
    *t = g;
  }
  table_put(t, s, id);
  return 1;
}

static int parse_int(const char *s, long long *v) {
  if (!*s) return 0;
  char *end;
  errno = 0;
  *v = strtoll(s, &end, 10);
  return *end == '\0' && errno == 0;
}

nb_status nb_csv_load(const char *path, const nb_csv_options *opt, nb_dataset *out) {
  if (!path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_csv_load: NULL argument");
  memset(out, 0, sizeof *out);
  nb_csv_options o = opt ? *opt : (nb_csv_options){NULL, ',', NULL};
  if (!o.delimiter) o.delimiter = ',';
  if (o.delimiter == '"' || o.delimiter == '\n' || o.delimiter == '\r')
    return nb_error(NB_ERR_INVALID_ARG, "nb_csv_load: delimiter %d cannot be a quote or newline",
                    o.delimiter);
  const nb_dataset *cf = o.classes_from;

  parser p = {path, NULL, 0, 0, 0, 1, o.delimiter, NULL, 0, 0};
  nb_status st = read_file(path, &p.buf, &p.len);
  if (st) return st;
  if (p.len >= 3 && !memcmp(p.buf, "\xEF\xBB\xBF", 3)) p.pos = p.line_start = 3; /* UTF-8 BOM */

  char **header = NULL;
  field *labels = NULL;
  float *xs = NULL;
  class_table table = {NULL, NULL, 0, 0};
  int64_t n = 0, cap_rows = 0;
  int ncols = 0, label_col = -1, got = 0;

  st = read_record(&p, &got);
  if (!st && !got) st = nb_error(NB_ERR_FORMAT, "%s:1:1: empty file (expected a header row)", path);
  if (!st) {
    ncols = p.nf;
    header = malloc((size_t)(ncols + 1) * sizeof *header);
    if (!header) st = nb_error(NB_ERR_OOM, "%s: out of memory", path);
  }
  for (int j = 0; !st && j < ncols; j++) {
    header[j] = p.f[j].s;
    if (o.label_column && label_col < 0 && !strcmp(header[j], o.label_column)) label_col = j;
  }
  if (!st && !o.label_column) label_col = ncols - 1;
  if (!st && label_col < 0) {
    char cols[512] = "";
    size_t used = 0;
    for (int j = 0; j < ncols && used < sizeof cols; j++) {
      int k = snprintf(cols + used, sizeof cols - used, "%s'%s'", j ? ", " : "", header[j]);
      if (k < 0) break;
      used += (size_t)k;
    }
    st = nb_error(NB_ERR_FORMAT, "%s:%d: no column named '%s' in the header (columns: %s)", path,
                  p.f[0].line, o.label_column, cols);
  }
  if (!st && ncols < 2)
    st = nb_error(NB_ERR_FORMAT,
                  "%s:%d: the header has %d column; expected a label column and at least one "
                  "feature column",
                  path, p.f[0].line, ncols);
  const int F = ncols > 1 ? ncols - 1 : 1;

  while (!st) {
    st = read_record(&p, &got);
    if (st || !got) break;
    if (p.nf != ncols) {
      const field *at = p.nf > ncols ? &p.f[ncols] : &p.f[p.nf - 1];
      st = nb_error(NB_ERR_FORMAT, "%s:%d:%d: expected %d fields as in the header, found %d", path,
                    at->line, at->col, ncols, p.nf);
      break;
    }
    if (n == cap_rows) {
      int64_t c = cap_rows ? cap_rows * 2 : 1024;
      float *nx = c > ((int64_t)1 << 40) / F ? NULL : realloc(xs, (size_t)(c * F) * sizeof *xs);
      if (nx) xs = nx;
      field *nl = nx ? realloc(labels, (size_t)c * sizeof *labels) : NULL;
      if (!nx || !nl) {
        st = nb_error(NB_ERR_OOM, "%s:%d: out of memory after %lld rows", path, p.line,
                      (long long)n);
        break;
      }
      labels = nl;
      cap_rows = c;
    }
    float *row = xs + n * F;
    for (int j = 0, k = 0; j < ncols && !st; j++) {
      const field *fl = &p.f[j];
      if (j == label_col) {
        if (!*fl->s)
          st = nb_error(NB_ERR_FORMAT, "%s:%d:%d: empty label in column '%s'", path, fl->line,
                        fl->col, header[j]);
        labels[n] = *fl;
        continue;
      }
      char *end;
      double v = strtod(fl->s, &end);
      if (!*fl->s || *end)
        st = nb_error(NB_ERR_FORMAT, "%s:%d:%d: expected a number in column '%s', found '%s'", path,
                      fl->line, fl->col, header[j], fl->s);
      row[k++] = (float)v;
    }
    n++;
  }
  if (!st && n == 0) st = nb_error(NB_ERR_FORMAT, "%s: no data rows after the header", path);

  int64_t shape[1] = {F};
  if (!st) st = nb_dataset_alloc(out, n, 1, shape);
  if (!st && xs) memcpy(out->x, xs, (size_t)(n * F) * sizeof *xs);

  /* labels: names of classes_from, integer ids, or names by first appearance */
  int all_int = 1;
  long long v = 0;
  for (int64_t i = 0; !st && i < n && all_int; i++) all_int = parse_int(labels[i].s, &v);
  if (!st && cf && cf->class_names) {
    for (int c = 0; c < cf->num_classes && !st; c++)
      if (table_find(&table, cf->class_names[c]) < 0 && !table_add(&table, cf->class_names[c], c))
        st = nb_error(NB_ERR_OOM, "%s: out of memory", path);
    for (int64_t i = 0; !st && i < n; i++) {
      int id = table_find(&table, labels[i].s);
      if (id < 0)
        st = nb_error(NB_ERR_FORMAT,
                      "%s:%d:%d: label '%s' is not one of the %d classes of classes_from", path,
                      labels[i].line, labels[i].col, labels[i].s, cf->num_classes);
      else
        out->y[i] = id;
    }
    if (!st)
      st = nb_dataset_set_classes(out, cf->num_classes, (const char *const *)cf->class_names);
  } else if (!st && all_int) {
    long long max = -1;
    const long long limit = cf && cf->num_classes > 0 ? cf->num_classes : (long long)INT_MAX - 1;
    for (int64_t i = 0; !st && i < n; i++) {
      parse_int(labels[i].s, &v);
      if (v < 0 || v >= limit)
        st = nb_error(NB_ERR_FORMAT, "%s:%d:%d: integer label %lld is outside [0, %lld)%s", path,
                      labels[i].line, labels[i].col, v, limit,
                      cf && cf->num_classes > 0 ? " (the classes of classes_from)" : "");
      out->y[i] = v;
      if (v > max) max = v;
    }
    if (!st)
      st = nb_dataset_set_classes(out, cf && cf->num_classes > 0 ? cf->num_classes : (int)max + 1,
                                  NULL);
  } else if (!st) {
    if (cf)
      st =
          nb_error(NB_ERR_FORMAT,
                   "%s: labels are names but classes_from has integer classes without names", path);
    const char **names = NULL;
    int count = 0, names_cap = 0;
    for (int64_t i = 0; !st && i < n; i++) {
      int id = table_find(&table, labels[i].s);
      if (id < 0) {
        if (count == names_cap) {
          names_cap = names_cap ? names_cap * 2 : 16;
          const char **nn = realloc(names, (size_t)names_cap * sizeof *names);
          if (!nn) {
            st = nb_error(NB_ERR_OOM, "%s: out of memory", path);
            break;
          }
          names = nn;
        }
        if (!table_add(&table, labels[i].s, count)) {
          st = nb_error(NB_ERR_OOM, "%s: out of memory", path);
          break;
        }
        names[count] = labels[i].s;
        id = count++;
      }
      out->y[i] = id;
    }
    if (!st) st = nb_dataset_set_classes(out, count, names);
    free(names);
  }

  free(table.keys);
  free(table.ids);
  free(header);
  free(labels);
  free(xs);
  free(p.f);
  free(p.buf);
  if (st) nb_dataset_free(out);
  return st;
}
