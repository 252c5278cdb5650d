/* NumPy .npy files (format versions 1.0, 2.0 and 3.0): a magic string, a
 * Python dict literal giving dtype, memory order and shape, then the raw
 * array.
 *
 * The file is untrusted: the header is parsed by a small grammar of its own
 * (never evaluated), every declared size is checked against the bytes the
 * file actually holds before anything is allocated, and shape products are
 * computed with overflow checks, so a hostile file costs one NB_ERR_FORMAT
 * naming the file and the reason. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nabla/io.h"

/* numpy refuses headers above 10 kB unless told otherwise; a megabyte is
 * far beyond any real header and bounds what a corrupt length can cost. */
#define NPY_MAX_HEADER (1u << 20)
static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

static int host_is_le(void) {
  uint16_t x = 1;
  unsigned char c;
  memcpy(&c, &x, 1);
  return c == 1;
}

static void swap_bytes(void *p, size_t n, size_t elem) {
  unsigned char *b = p;
  for (size_t i = 0; i + elem <= n; i += elem)
    for (size_t j = 0; j < elem / 2; j++) {
      unsigned char t = b[i + j];
      b[i + j] = b[i + elem - 1 - j];
      b[i + elem - 1 - j] = t;
    }
}

/* ---- header ------------------------------------------------------------------- */

/* One .npy element type: the file's kind and size and what nabla keeps. */
typedef struct {
  char kind; /* 'f', 'i', 'u', 'b' */
  int size;
  int big_endian;
  nb_dtype to;
} npy_type;

static int npy_type_of(const char *descr, npy_type *t) {
  size_t n = strlen(descr);
  if (n < 3 || n > 4) return 0;
  char order = descr[0], kind = descr[1];
  int size = atoi(descr + 2);
  for (size_t i = 2; i < n; i++)
    if (!isdigit((unsigned char)descr[i])) return 0;
  if (order != '<' && order != '>' && order != '|' && order != '=') return 0;
  t->kind = kind;
  t->size = size;
  t->big_endian = order == '>' || (order == '=' && !host_is_le());
  if (kind == 'f' && size == 4)
    t->to = NB_F32;
  else if (kind == 'f' && size == 8)
    t->to = NB_F32; /* nabla computes in f32 */
  else if (kind == 'f' && size == 2)
    t->to = NB_F16;
  else if (kind == 'i' && (size == 1 || size == 2 || size == 4))
    t->to = NB_I32;
  else if (kind == 'i' && size == 8)
    t->to = NB_I64;
  else if (kind == 'u' && size == 1)
    t->to = NB_U8;
  else if (kind == 'u' && size == 2)
    t->to = NB_I32;
  else if (kind == 'u' && size == 4)
    t->to = NB_I64;
  else if (kind == 'b' && size == 1)
    t->to = NB_U8;
  else
    return 0;
  return 1;
}

typedef struct {
  const char *s;
  size_t n, pos;
  char err[160];
} hdr_parser;

static int hp_fail(hdr_parser *p, const char *what) {
  snprintf(p->err, sizeof p->err, "%s (header byte %zu)", what, p->pos);
  return 0;
}

static void hp_ws(hdr_parser *p) {
  while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                           p->s[p->pos] == '\r'))
    p->pos++;
}

static int hp_eat(hdr_parser *p, char c) {
  hp_ws(p);
  if (p->pos < p->n && p->s[p->pos] == c) {
    p->pos++;
    return 1;
  }
  return 0;
}

/* A quoted string without escapes (dtype strings and keys have none). */
static int hp_string(hdr_parser *p, char *out, size_t cap) {
  hp_ws(p);
  if (p->pos >= p->n || (p->s[p->pos] != '\'' && p->s[p->pos] != '"'))
    return hp_fail(p, "expected a quoted string");
  char q = p->s[p->pos++];
  size_t len = 0;
  while (p->pos < p->n && p->s[p->pos] != q) {
    if (p->s[p->pos] == '\\') return hp_fail(p, "escapes in strings are not supported");
    if (len + 1 >= cap) return hp_fail(p, "string too long");
    out[len++] = p->s[p->pos++];
  }
  if (p->pos >= p->n) return hp_fail(p, "unterminated string");
  p->pos++;
  out[len] = '\0';
  return 1;
}

static int hp_word(hdr_parser *p, const char *w) {
  hp_ws(p);
  size_t n = strlen(w);
  if (p->n - p->pos >= n && !memcmp(p->s + p->pos, w, n)) {
    p->pos += n;
    return 1;
  }
  return 0;
}

/* "(3, 4)", "(3,)" or "()". */
static int hp_shape(hdr_parser *p, int *ndim, int64_t *shape) {
  if (!hp_eat(p, '(')) return hp_fail(p, "shape must be a tuple");
  *ndim = 0;
  for (;;) {
    if (hp_eat(p, ')')) return 1;
    hp_ws(p);
    if (p->pos >= p->n || !isdigit((unsigned char)p->s[p->pos]))
      return hp_fail(p, "shape entries must be non-negative integers");
    int64_t v = 0;
    while (p->pos < p->n && isdigit((unsigned char)p->s[p->pos])) {
      int d = p->s[p->pos++] - '0';
      if (v > (INT64_MAX - d) / 10) return hp_fail(p, "shape entry overflows int64");
      v = v * 10 + d;
    }
    if (p->pos < p->n && p->s[p->pos] == 'L') p->pos++; /* Python 2 longs */
    if (*ndim >= NB_MAX_DIMS) return hp_fail(p, "more than 8 dimensions");
    shape[(*ndim)++] = v;
    if (hp_eat(p, ',')) continue;
    if (hp_eat(p, ')')) return 1;
    return hp_fail(p, "expected ',' or ')' in shape");
  }
}

/* Parses the header dict: exactly the keys descr, fortran_order, shape. */
static int parse_header(hdr_parser *p, char *descr, size_t dcap, int *fortran, int *ndim,
                        int64_t *shape) {
  int have_descr = 0, have_fortran = 0, have_shape = 0;
  if (!hp_eat(p, '{')) return hp_fail(p, "header is not a dict");
  for (;;) {
    if (hp_eat(p, '}')) break;
    char key[32];
    if (!hp_string(p, key, sizeof key)) return 0;
    if (!hp_eat(p, ':')) return hp_fail(p, "expected ':' after a key");
    if (!strcmp(key, "descr")) {
      hp_ws(p);
      if (p->pos < p->n && p->s[p->pos] == '[')
        return hp_fail(p, "structured dtypes are not supported");
      if (have_descr++) return hp_fail(p, "duplicate key 'descr'");
      if (!hp_string(p, descr, dcap)) return 0;
    } else if (!strcmp(key, "fortran_order")) {
      if (have_fortran++) return hp_fail(p, "duplicate key 'fortran_order'");
      if (hp_word(p, "True"))
        *fortran = 1;
      else if (hp_word(p, "False"))
        *fortran = 0;
      else
        return hp_fail(p, "fortran_order must be True or False");
    } else if (!strcmp(key, "shape")) {
      if (have_shape++) return hp_fail(p, "duplicate key 'shape'");
      if (!hp_shape(p, ndim, shape)) return 0;
    } else {
      return hp_fail(p, "unknown key in header");
    }
    if (hp_eat(p, ',')) continue;
    if (hp_eat(p, '}')) break;
    return hp_fail(p, "expected ',' or '}'");
  }
  hp_ws(p);
  if (p->pos != p->n) return hp_fail(p, "text after the header dict");
  if (!have_descr || !have_fortran || !have_shape)
    return hp_fail(p, "header lacks descr, fortran_order or shape");
  return 1;
}

/* ---- decoding ------------------------------------------------------------------- */

/* The fixed preamble: magic, version and header length. *pre is its size
 * (10 or 12 bytes), *hlen the header length it declares, checked against
 * the file size. */
static nb_status decode_preamble(const uint8_t *head, size_t avail, uint64_t file_size,
                                 const char *name, size_t *pre, uint64_t *hlen) {
  if (file_size < 10 || avail < 10 || memcmp(head, npy_magic, 6))
    return nb_error(NB_ERR_FORMAT, "%s: not a .npy file (bad magic)", name);
  int major = head[6], minor = head[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    return nb_error(NB_ERR_FORMAT, "%s: .npy format version %d.%d is not supported (1.0-3.0)", name,
                    major, minor);
  *pre = major == 1 ? 10 : 12;
  if (file_size < *pre || avail < *pre)
    return nb_error(NB_ERR_FORMAT, "%s: truncated .npy preamble", name);
  *hlen = major == 1 ? (uint64_t)head[8] | (uint64_t)head[9] << 8
                     : (uint64_t)head[8] | (uint64_t)head[9] << 8 | (uint64_t)head[10] << 16 |
                           (uint64_t)head[11] << 24;
  if (*hlen > file_size - *pre)
    return nb_error(NB_ERR_FORMAT,
                    "%s: .npy header declares %" PRIu64 " bytes, the file has %" PRIu64
                    " after the preamble (truncated?)",
                    name, *hlen, file_size - *pre);
  if (*hlen > NPY_MAX_HEADER)
    return nb_error(NB_ERR_FORMAT, "%s: .npy header of %" PRIu64 " bytes is implausibly large",
                    name, *hlen);
  return NB_OK;
}

/* Parses the header text (hlen bytes after a preamble of `pre` bytes) and
 * fills everything in `a` but the data; *data_bytes is the array's size in
 * the file, which must be exactly what follows the header. */
static nb_status decode_header(const char *text, size_t pre, uint64_t hlen, uint64_t file_size,
                               const char *name, nb_npy *a, npy_type *ty, uint64_t *data_bytes) {
  hdr_parser p = {text, (size_t)hlen, 0, ""};
  char descr[16] = {0};
  int fortran = 0;
  memset(a, 0, sizeof *a);
  if (!parse_header(&p, descr, sizeof descr, &fortran, &a->ndim, a->shape))
    return nb_error(NB_ERR_FORMAT, "%s: bad .npy header: %s", name, p.err);
  if (!npy_type_of(descr, ty))
    return nb_error(NB_ERR_FORMAT,
                    "%s: .npy dtype '%s' is not supported (f2/f4/f8, i1/i2/i4/i8, u1/u2/u4, b1)",
                    name, descr);
  /* for rank 0 and 1 both orders are the same bytes */
  if (fortran && a->ndim > 1)
    return nb_error(NB_ERR_FORMAT,
                    "%s: the array is in Fortran order; save it in C order "
                    "(numpy.ascontiguousarray) and try again",
                    name);
  memcpy(a->descr, descr, sizeof a->descr - 1); /* at most 4 characters: checked above */
  a->descr[sizeof a->descr - 1] = '\0';
  a->dtype = ty->to;
  /* the product must fit in the bytes after the header; checking each step
   * against that bound also keeps it from overflowing */
  uint64_t after = file_size - pre - hlen;
  uint64_t room = after / (uint64_t)ty->size, numel = 1;
  int zero = 0;
  char s[160];
  for (int i = 0; i < a->ndim; i++) zero |= a->shape[i] == 0;
  for (int i = 0; i < a->ndim && !zero; i++) {
    uint64_t d = (uint64_t)a->shape[i];
    if (numel > room / d)
      return nb_error(NB_ERR_FORMAT,
                      "%s: .npy shape %s of %s needs more data than the %" PRIu64
                      " bytes after the header (truncated?)",
                      name, nb_shape_str(a->ndim, a->shape, s, sizeof s), descr, after);
    numel *= d;
  }
  if (zero) numel = 0;
  a->numel = (int64_t)numel;
  *data_bytes = numel * (uint64_t)ty->size;
  if (*data_bytes != after)
    return nb_error(NB_ERR_FORMAT,
                    "%s: .npy shape %s of %s takes %" PRIu64 " bytes, the file holds %" PRIu64
                    " after the header",
                    name, nb_shape_str(a->ndim, a->shape, s, sizeof s), descr, *data_bytes, after);
  return NB_OK;
}

/* Converts numel elements of the file's type (raw, in file byte order) into
 * a new buffer of a->dtype. */
static nb_status convert_data(uint8_t *raw, const npy_type *ty, nb_npy *a) {
  size_t n = (size_t)a->numel, es = nb_dtype_size(a->dtype);
  if (ty->size > 1 && ty->big_endian != !host_is_le())
    swap_bytes(raw, n * (size_t)ty->size, (size_t)ty->size);
  void *out = malloc(n ? n * es : 1);
  if (!out) return nb_error(NB_ERR_OOM, "npy: out of memory for %zu elements", n);
  for (size_t i = 0; i < n; i++) {
    const uint8_t *p = raw + i * (size_t)ty->size;
    switch (ty->kind) {
    case 'f':
      if (ty->size == 8) {
        double d;
        memcpy(&d, p, 8);
        ((float *)out)[i] = (float)d;
      } else {
        memcpy((uint8_t *)out + i * es, p, es); /* f4 -> f32, f2 -> f16 */
      }
      break;
    case 'i':
      if (ty->size == 1)
        ((int32_t *)out)[i] = (int8_t)p[0];
      else if (ty->size == 2) {
        int16_t v;
        memcpy(&v, p, 2);
        ((int32_t *)out)[i] = v;
      } else {
        memcpy((uint8_t *)out + i * es, p, es); /* i4, i8 */
      }
      break;
    case 'u':
      if (ty->size == 1)
        ((uint8_t *)out)[i] = p[0];
      else if (ty->size == 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        ((int32_t *)out)[i] = v;
      } else {
        uint32_t v;
        memcpy(&v, p, 4);
        ((int64_t *)out)[i] = v;
      }
      break;
    default: ((uint8_t *)out)[i] = p[0] != 0; break; /* bool */
    }
  }
  a->data = out;
  return NB_OK;
}

nb_status nb_npy_decode(const void *buf, size_t len, const char *name, nb_npy *out) {
  if (!out || (!buf && len)) return nb_error(NB_ERR_INVALID_ARG, "nb_npy_decode: NULL argument");
  const char *nm = name ? name : "<buffer>";
  memset(out, 0, sizeof *out);
  const uint8_t *b = buf;
  size_t pre = 0;
  uint64_t hlen = 0, bytes = 0;
  npy_type ty;
  nb_npy a;
  nb_status st = decode_preamble(b, len, len, nm, &pre, &hlen);
  if (!st) st = decode_header((const char *)b + pre, pre, hlen, len, nm, &a, &ty, &bytes);
  if (st) return st;
  uint8_t *raw = malloc(bytes ? (size_t)bytes : 1);
  if (!raw) return nb_error(NB_ERR_OOM, "npy: out of memory");
  memcpy(raw, b + pre + hlen, (size_t)bytes);
  st = convert_data(raw, &ty, &a);
  free(raw);
  if (!st) *out = a;
  return st;
}

nb_status nb_npy_load(const char *path, nb_npy *out) {
  if (!path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_npy_load: NULL argument");
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return nb_error(NB_ERR_IO, "%s: not a regular file", path);
  }
  uint64_t size = (uint64_t)sb.st_size;
  /* every read below is sized by a length already checked against `size` */
  uint8_t head[12];
  size_t got = fread(head, 1, sizeof head, f), pre = 0;
  uint64_t hlen = 0, bytes = 0;
  npy_type ty;
  nb_npy a;
  char *text = NULL;
  uint8_t *raw = NULL;
  nb_status st = decode_preamble(head, got, size, path, &pre, &hlen);
  if (!st && !(text = malloc((size_t)hlen + 1))) st = nb_error(NB_ERR_OOM, "npy: out of memory");
  if (!st && (fseek(f, (long)pre, SEEK_SET) != 0 || fread(text, 1, (size_t)hlen, f) != hlen))
    st = nb_error(NB_ERR_IO, "%s: short read in the .npy header", path);
  if (!st) st = decode_header(text, pre, hlen, size, path, &a, &ty, &bytes);
  free(text);
  if (!st && !(raw = malloc(bytes ? (size_t)bytes : 1)))
    st = nb_error(NB_ERR_OOM, "npy: out of memory");
  if (!st && fread(raw, 1, (size_t)bytes, f) != bytes)
    st = nb_error(NB_ERR_IO, "%s: short read in the array data", path);
  fclose(f);
  if (!st) st = convert_data(raw, &ty, &a);
  free(raw);
  if (!st) *out = a;
  return st;
}

void nb_npy_free(nb_npy *a) {
  if (!a) return;
  free(a->data);
  a->data = NULL;
}

/* ---- writing --------------------------------------------------------------------- */

nb_status nb_npy_save(const char *path, nb_dtype dtype, int ndim, const int64_t *shape,
                      const void *data) {
  if (!path || (ndim && !shape) || ndim < 0 || ndim > NB_MAX_DIMS)
    return nb_error(NB_ERR_INVALID_ARG, "nb_npy_save: bad arguments");
  const char *descr;
  switch (dtype) {
  case NB_F32: descr = "<f4"; break;
  case NB_F16: descr = "<f2"; break;
  case NB_BF16: descr = "<f4"; break; /* numpy has no bfloat16: widened, exactly */
  case NB_I32: descr = "<i4"; break;
  case NB_I64: descr = "<i8"; break;
  case NB_U8: descr = "|u1"; break;
  default: return nb_error(NB_ERR_DTYPE, "nb_npy_save: invalid dtype %d", (int)dtype);
  }
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return nb_error(NB_ERR_INVALID_ARG, "nb_npy_save: negative dimension");
    numel *= shape[i];
  }
  if (numel && !data) return nb_error(NB_ERR_INVALID_ARG, "nb_npy_save: data is NULL");
  char hdr[512];
  int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int i = 0; i < ndim; i++)
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%s%" PRId64, i ? ", " : "", shape[i]);
  n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%s), }", ndim == 1 ? "," : "");
  /* pad with spaces and a newline so the data starts 64-byte aligned, as
   * numpy writes it */
  int total = 10 + n + 1;
  int pad = (64 - total % 64) % 64;
  memset(hdr + n, ' ', (size_t)pad);
  n += pad;
  hdr[n++] = '\n';
  uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(n & 0xff), (uint8_t)(n >> 8)};
  nb_atomic_file *f;
  nb_status st = nb_atomic_open(path, &f);
  if (st) return st;
  if (!(st = nb_atomic_write(f, pre, sizeof pre))) st = nb_atomic_write(f, hdr, (size_t)n);
  /* elements in chunks, converted to little-endian (and bf16 to f32) */
  size_t es = nb_dtype_size(dtype), out_es = dtype == NB_BF16 ? 4 : es;
  uint8_t chunk[4096];
  size_t per = sizeof chunk / out_es;
  for (size_t i = 0; !st && i < (size_t)numel; i += per) {
    size_t m = (size_t)numel - i < per ? (size_t)numel - i : per;
    if (dtype == NB_BF16) {
      for (size_t k = 0; k < m; k++) {
        uint16_t h;
        memcpy(&h, (const uint8_t *)data + (i + k) * 2, 2);
        float v = nb_bf16_to_f32(h);
        memcpy(chunk + k * 4, &v, 4);
      }
    } else {
      memcpy(chunk, (const uint8_t *)data + i * es, m * es);
    }
    if (!host_is_le() && out_es > 1) swap_bytes(chunk, m * out_es, out_es);
    st = nb_atomic_write(f, chunk, m * out_es);
  }
  if (st) {
    nb_atomic_abort(f);
    return st;
  }
  return nb_atomic_commit(f);
}
