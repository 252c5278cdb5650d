/* A protobuf wire-format reader and the ONNX messages decoded with it, by
 * the field numbers of onnx.proto3. We read only the fields the importer
 * needs and skip the rest by wire type, so newer ONNX files still load.
 *
 * The file is untrusted: every read is bounds-checked, and every array is
 * sized from what the bytes actually hold (a count of fields or a payload
 * length), never from a number stored in the file, so a corrupt file cannot
 * ask for a huge allocation. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_internal.h"

/* protobuf's own hard limit on a message */
#define OX_MAX_FILE ((size_t)INT32_MAX)

/* ---- arena ------------------------------------------------------------------ */

typedef union ox_chunk {
  union ox_chunk *next;
  max_align_t align; /* keeps the payload after the header aligned */
} ox_chunk;

struct ox_arena {
  ox_chunk *head;
};

ox_arena *ox_arena_new(void) { return calloc(1, sizeof(ox_arena)); }

void ox_arena_free(ox_arena *a) {
  if (!a) return;
  for (ox_chunk *c = a->head; c;) {
    ox_chunk *n = c->next;
    free(c);
    c = n;
  }
  free(a);
}

void *ox_alloc(ox_arena *a, size_t n) {
  if (n > SIZE_MAX - sizeof(ox_chunk)) return NULL;
  ox_chunk *c = calloc(1, sizeof(ox_chunk) + (n ? n : 1));
  if (!c) return NULL;
  c->next = a->head;
  a->head = c;
  return c + 1;
}

/* ---- wire format -------------------------------------------------------------- */

static nb_status pb_fail(const nb_pb_reader *r, size_t at, const char *what) {
  return nb_error(NB_ERR_FORMAT, "%s: byte %zu: %s", r->file ? r->file : "<buffer>", r->base + at,
                  what);
}

void nb_pb_init(nb_pb_reader *r, const void *buf, size_t len, const char *file) {
  r->buf = buf;
  r->len = len;
  r->pos = 0;
  r->base = 0;
  r->file = file;
}

int nb_pb_done(const nb_pb_reader *r) { return r->pos >= r->len; }

nb_status nb_pb_read_varint(nb_pb_reader *r, uint64_t *v) {
  uint64_t x = 0;
  size_t start = r->pos;
  for (int i = 0; i < 10; i++) {
    if (r->pos >= r->len) return pb_fail(r, start, "truncated varint");
    uint8_t b = r->buf[r->pos++];
    /* the 10th byte carries bit 63 only */
    if (i == 9 && b > 1) return pb_fail(r, start, "varint longer than 64 bits");
    x |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *v = x;
      return NB_OK;
    }
  }
  return pb_fail(r, start, "varint longer than 10 bytes");
}

nb_status nb_pb_read_fixed32(nb_pb_reader *r, uint32_t *v) {
  if (r->len - r->pos < 4) return pb_fail(r, r->pos, "truncated fixed32");
  const uint8_t *p = r->buf + r->pos;
  *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  r->pos += 4;
  return NB_OK;
}

nb_status nb_pb_read_fixed64(nb_pb_reader *r, uint64_t *v) {
  if (r->len - r->pos < 8) return pb_fail(r, r->pos, "truncated fixed64");
  uint64_t x = 0;
  for (int i = 7; i >= 0; i--) x = x << 8 | r->buf[r->pos + (size_t)i];
  r->pos += 8;
  *v = x;
  return NB_OK;
}

nb_status nb_pb_read_tag(nb_pb_reader *r, uint32_t *field, int *wire) {
  size_t start = r->pos;
  uint64_t t;
  nb_status st = nb_pb_read_varint(r, &t);
  if (st) return st;
  uint64_t f = t >> 3;
  int w = (int)(t & 7);
  if (f == 0 || f > 536870911u) return pb_fail(r, start, "bad field number");
  if (w != NB_PB_VARINT && w != NB_PB_FIXED64 && w != NB_PB_LEN && w != NB_PB_FIXED32) {
    char msg[64];
    snprintf(msg, sizeof msg, "unsupported wire type %d", w);
    return pb_fail(r, start, msg);
  }
  *field = (uint32_t)f;
  *wire = w;
  return NB_OK;
}

nb_status nb_pb_read_bytes(nb_pb_reader *r, const uint8_t **data, size_t *n) {
  size_t start = r->pos;
  uint64_t len;
  nb_status st = nb_pb_read_varint(r, &len);
  if (st) return st;
  if (len > r->len - r->pos) return pb_fail(r, start, "length-delimited field runs past its end");
  *data = r->buf + r->pos;
  *n = (size_t)len;
  r->pos += (size_t)len;
  return NB_OK;
}

nb_status nb_pb_read_sub(nb_pb_reader *r, nb_pb_reader *sub) {
  const uint8_t *p;
  size_t n;
  nb_status st = nb_pb_read_bytes(r, &p, &n);
  if (st) return st;
  sub->buf = p;
  sub->len = n;
  sub->pos = 0;
  sub->base = r->base + (size_t)(p - r->buf);
  sub->file = r->file;
  return NB_OK;
}

nb_status nb_pb_skip(nb_pb_reader *r, int wire) {
  uint64_t v;
  uint32_t v32;
  const uint8_t *p;
  size_t n;
  switch (wire) {
  case NB_PB_VARINT: return nb_pb_read_varint(r, &v);
  case NB_PB_FIXED64: return nb_pb_read_fixed64(r, &v);
  case NB_PB_FIXED32: return nb_pb_read_fixed32(r, &v32);
  case NB_PB_LEN: return nb_pb_read_bytes(r, &p, &n);
  }
  return pb_fail(r, r->pos, "unsupported wire type");
}

/* ---- decoding helpers ------------------------------------------------------------ */

typedef struct ox_ctx {
  ox_arena *a;
  const char *file;
} ox_ctx;

static nb_status oom(void) { return nb_error(NB_ERR_OOM, "onnx: out of memory"); }

static nb_status want_wire(const nb_pb_reader *r, size_t at, int wire, int want, const char *what) {
  if (wire == want) return NB_OK;
  char msg[128];
  snprintf(msg, sizeof msg, "%s has wire type %d, expected %d", what, wire, want);
  return pb_fail(r, at, msg);
}

/* A bytes/string field as a NUL-terminated arena copy. */
static nb_status read_string(ox_ctx *c, nb_pb_reader *r, const char **out) {
  const uint8_t *p;
  size_t n;
  nb_status st = nb_pb_read_bytes(r, &p, &n);
  if (st) return st;
  char *s = ox_alloc(c->a, n + 1);
  if (!s) return oom();
  memcpy(s, p, n);
  *out = s;
  return NB_OK;
}

/* Counts the values of field `f` in a message: one per occurrence, or, for
 * a packed occurrence, one per varint / per elem_size bytes. Only counts
 * what is there, so arrays sized from it are bounded by the message size. */
static nb_status count_field(const nb_pb_reader *msg, uint32_t f, int elem_size, size_t *out) {
  nb_pb_reader r = *msg;
  r.pos = 0;
  size_t n = 0;
  while (!nb_pb_done(&r)) {
    uint32_t field;
    int wire;
    nb_status st = nb_pb_read_tag(&r, &field, &wire);
    if (st) return st;
    if (field == f && wire == NB_PB_LEN && elem_size >= 0) {
      const uint8_t *p;
      size_t len;
      st = nb_pb_read_bytes(&r, &p, &len);
      if (st) return st;
      if (elem_size == 0) { /* packed varints: each ends in a byte < 0x80 */
        for (size_t i = 0; i < len; i++) n += p[i] < 0x80;
      } else {
        n += len / (size_t)elem_size;
      }
      continue;
    }
    if (field == f) n++;
    st = nb_pb_skip(&r, wire);
    if (st) return st;
  }
  *out = n;
  return NB_OK;
}

/* Appends the values of one occurrence of a repeated varint field (packed
 * or not) to out[*n], at most cap values in all. */
static nb_status read_varints(nb_pb_reader *r, int wire, int64_t *out, size_t cap, size_t *n) {
  nb_status st;
  if (wire == NB_PB_VARINT) {
    uint64_t v;
    if ((st = nb_pb_read_varint(r, &v))) return st;
    if (*n >= cap) return pb_fail(r, r->pos, "internal: varint count mismatch");
    out[(*n)++] = (int64_t)v;
    return NB_OK;
  }
  if (wire != NB_PB_LEN) return pb_fail(r, r->pos, "repeated integer with a bad wire type");
  nb_pb_reader sub;
  if ((st = nb_pb_read_sub(r, &sub))) return st;
  while (!nb_pb_done(&sub)) {
    uint64_t v;
    if ((st = nb_pb_read_varint(&sub, &v))) return st;
    if (*n >= cap) return pb_fail(&sub, sub.pos, "internal: varint count mismatch");
    out[(*n)++] = (int64_t)v;
  }
  return NB_OK;
}

/* Appends fixed-width values (4 or 8 bytes) of a repeated field, packed or
 * not, as raw little-endian bit patterns. */
static nb_status read_fixed(nb_pb_reader *r, int wire, int size, uint64_t *out, size_t cap,
                            size_t *n) {
  nb_status st;
  int want = size == 4 ? NB_PB_FIXED32 : NB_PB_FIXED64;
  if (wire == want) {
    uint64_t v = 0;
    uint32_t v32;
    if (size == 4) {
      if ((st = nb_pb_read_fixed32(r, &v32))) return st;
      v = v32;
    } else if ((st = nb_pb_read_fixed64(r, &v))) {
      return st;
    }
    if (*n >= cap) return pb_fail(r, r->pos, "internal: fixed count mismatch");
    out[(*n)++] = v;
    return NB_OK;
  }
  if (wire != NB_PB_LEN)
    return pb_fail(r, r->pos, "repeated fixed-width field with a bad wire type");
  nb_pb_reader sub;
  if ((st = nb_pb_read_sub(r, &sub))) return st;
  if (sub.len % (size_t)size)
    return pb_fail(&sub, 0, "packed fixed-width field length is not a multiple of its size");
  while (!nb_pb_done(&sub)) {
    uint64_t v = 0;
    uint32_t v32;
    if (size == 4) {
      if ((st = nb_pb_read_fixed32(&sub, &v32))) return st;
      v = v32;
    } else if ((st = nb_pb_read_fixed64(&sub, &v))) {
      return st;
    }
    if (*n >= cap) return pb_fail(&sub, sub.pos, "internal: fixed count mismatch");
    out[(*n)++] = v;
  }
  return NB_OK;
}

static float bits_to_f32(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}

static double bits_to_f64(uint64_t b) {
  double d;
  memcpy(&d, &b, 8);
  return d;
}

/* ---- TensorProto ---------------------------------------------------------------- */

static int is_float_type(int t) {
  return t == NB_ONNX_FLOAT || t == NB_ONNX_DOUBLE || t == NB_ONNX_FLOAT16 || t == NB_ONNX_BFLOAT16;
}

static int is_int_type(int t) {
  return t == NB_ONNX_UINT8 || t == NB_ONNX_INT8 || t == NB_ONNX_UINT16 || t == NB_ONNX_INT16 ||
         t == NB_ONNX_INT32 || t == NB_ONNX_INT64 || t == NB_ONNX_BOOL || t == NB_ONNX_UINT32 ||
         t == NB_ONNX_UINT64;
}

static size_t type_size(int t) {
  switch (t) {
  case NB_ONNX_FLOAT: return 4;
  case NB_ONNX_UINT8: return 1;
  case NB_ONNX_INT8: return 1;
  case NB_ONNX_UINT16: return 2;
  case NB_ONNX_INT16: return 2;
  case NB_ONNX_INT32: return 4;
  case NB_ONNX_INT64: return 8;
  case NB_ONNX_BOOL: return 1;
  case NB_ONNX_FLOAT16: return 2;
  case NB_ONNX_DOUBLE: return 8;
  case NB_ONNX_UINT32: return 4;
  case NB_ONNX_UINT64: return 8;
  case NB_ONNX_BFLOAT16: return 2;
  }
  return 0;
}

const char *nb_onnx_type_name(int t) {
  switch (t) {
  case NB_ONNX_FLOAT: return "float";
  case NB_ONNX_UINT8: return "uint8";
  case NB_ONNX_INT8: return "int8";
  case NB_ONNX_UINT16: return "uint16";
  case NB_ONNX_INT16: return "int16";
  case NB_ONNX_INT32: return "int32";
  case NB_ONNX_INT64: return "int64";
  case NB_ONNX_STRING: return "string";
  case NB_ONNX_BOOL: return "bool";
  case NB_ONNX_FLOAT16: return "float16";
  case NB_ONNX_DOUBLE: return "double";
  case NB_ONNX_UINT32: return "uint32";
  case NB_ONNX_UINT64: return "uint64";
  case NB_ONNX_BFLOAT16: return "bfloat16";
  }
  return "unknown";
}

/* One little-endian element of raw_data as f32 or int64. */
static float raw_float(int t, const uint8_t *p) {
  uint64_t b = 0;
  for (size_t i = type_size(t); i-- > 0;) b = b << 8 | p[i];
  switch (t) {
  case NB_ONNX_FLOAT: return bits_to_f32((uint32_t)b);
  case NB_ONNX_DOUBLE: return (float)bits_to_f64(b);
  case NB_ONNX_FLOAT16: return nb_f16_to_f32((uint16_t)b);
  default: return nb_bf16_to_f32((uint16_t)b);
  }
}

static int64_t raw_int(int t, const uint8_t *p) {
  uint64_t b = 0;
  for (size_t i = type_size(t); i-- > 0;) b = b << 8 | p[i];
  switch (t) {
  case NB_ONNX_INT8: return (int8_t)b;
  case NB_ONNX_INT16: return (int16_t)b;
  case NB_ONNX_INT32: return (int32_t)b;
  case NB_ONNX_BOOL: return b != 0;
  default: return (int64_t)b;
  }
}

nb_status ox_decode_tensor(ox_arena *a, const uint8_t *buf, size_t len, size_t base,
                           const char *file, nb_onnx_tensor **out) {
  ox_ctx c = {a, file};
  nb_pb_reader r;
  nb_pb_init(&r, buf, len, file);
  r.base = base;
  nb_status st;
  size_t ndims, nf, ni32, ni64, nd, nu64;
  if ((st = count_field(&r, 1, 0, &ndims)) || (st = count_field(&r, 4, 4, &nf)) ||
      (st = count_field(&r, 5, 0, &ni32)) || (st = count_field(&r, 7, 0, &ni64)) ||
      (st = count_field(&r, 10, 8, &nd)) || (st = count_field(&r, 11, 0, &nu64)))
    return st;
  if (ndims > NB_MAX_DIMS)
    return pb_fail(&r, 0, "tensor has more dimensions than nabla's maximum of 8");
  nb_onnx_tensor *t = ox_alloc(a, sizeof *t);
  /* every value array is sized by the counts above, which the bytes bound */
  int64_t *i32v = ox_alloc(a, (ni32 ? ni32 : 1) * sizeof(int64_t));
  int64_t *i64v = ox_alloc(a, (ni64 + nu64 ? ni64 + nu64 : 1) * sizeof(int64_t));
  uint64_t *fv = ox_alloc(a, (nf ? nf : 1) * sizeof(uint64_t));
  uint64_t *dv = ox_alloc(a, (nd ? nd : 1) * sizeof(uint64_t));
  if (!t || !i32v || !i64v || !fv || !dv) return oom();
  t->name = "";
  const uint8_t *raw = NULL;
  size_t raw_len = 0, n_dims = 0, n_f = 0, n_i32 = 0, n_i64 = 0, n_d = 0;
  int has_raw = 0, has_strings = 0, external = 0;
  ox_external ext = {NULL, NULL, NULL};
  while (!nb_pb_done(&r)) {
    size_t at = r.pos;
    uint32_t f;
    int w;
    if ((st = nb_pb_read_tag(&r, &f, &w))) return st;
    uint64_t v;
    switch (f) {
    case 1: st = read_varints(&r, w, t->dims, NB_MAX_DIMS, &n_dims); break;
    case 2:
      if ((st = want_wire(&r, at, w, NB_PB_VARINT, "TensorProto.data_type"))) return st;
      st = nb_pb_read_varint(&r, &v);
      t->elem_type = (int)(int32_t)v;
      break;
    case 4: st = read_fixed(&r, w, 4, fv, nf, &n_f); break;
    case 5: st = read_varints(&r, w, i32v, ni32, &n_i32); break;
    case 6:
      has_strings = 1;
      st = nb_pb_skip(&r, w);
      break;
    case 7: st = read_varints(&r, w, i64v, ni64 + nu64, &n_i64); break;
    case 8:
      if ((st = want_wire(&r, at, w, NB_PB_LEN, "TensorProto.name"))) return st;
      st = read_string(&c, &r, &t->name);
      break;
    case 9:
      if ((st = want_wire(&r, at, w, NB_PB_LEN, "TensorProto.raw_data"))) return st;
      st = nb_pb_read_bytes(&r, &raw, &raw_len);
      has_raw = 1;
      break;
    case 10: st = read_fixed(&r, w, 8, dv, nd, &n_d); break;
    case 11: st = read_varints(&r, w, i64v, ni64 + nu64, &n_i64); break;
    case 13: { /* external_data: StringStringEntryProto {key = 1, value = 2} */
      nb_pb_reader e;
      const char *key = "", *val = "";
      if ((st = want_wire(&r, at, w, NB_PB_LEN, "TensorProto.external_data")) ||
          (st = nb_pb_read_sub(&r, &e)))
        return st;
      while (!st && !nb_pb_done(&e)) {
        size_t ep = e.pos;
        uint32_t ef;
        int ew;
        if ((st = nb_pb_read_tag(&e, &ef, &ew))) break;
        if (ef == 1 || ef == 2) {
          if (!(st = want_wire(&e, ep, ew, NB_PB_LEN, "external_data entry")))
            st = read_string(&c, &e, ef == 1 ? &key : &val);
        } else {
          st = nb_pb_skip(&e, ew);
        }
      }
      if (!st && !strcmp(key, "location")) ext.location = val;
      if (!st && !strcmp(key, "offset")) ext.offset = val;
      if (!st && !strcmp(key, "length")) ext.length = val;
      break;
    }
    case 14:
      if ((st = want_wire(&r, at, w, NB_PB_VARINT, "TensorProto.data_location"))) return st;
      st = nb_pb_read_varint(&r, &v);
      if (!st && v == 1) external = 1;
      break;
    default: st = nb_pb_skip(&r, w); break;
    }
    if (st) return st;
  }
  t->ndim = (int)n_dims;
  int64_t numel = 1;
  for (int i = 0; i < t->ndim; i++) {
    if (t->dims[i] < 0) return pb_fail(&r, 0, "tensor has a negative dimension");
    /* a tensor larger than its file must come from external data or be
     * corrupt; this check also keeps the product from overflowing */
    if (t->dims[i] > 0 && numel > (int64_t)(OX_MAX_FILE / (size_t)t->dims[i]))
      numel = INT64_MAX;
    else
      numel *= t->dims[i];
  }
  t->numel = numel;
  const char *nm = t->name[0] ? t->name : "(unnamed)";
  if (has_strings || t->elem_type == NB_ONNX_STRING)
    return nb_error(NB_ERR_UNSUPPORTED, "%s: tensor '%s' holds strings", file, nm);
  int fl = is_float_type(t->elem_type), in = is_int_type(t->elem_type);
  if (!fl && !in)
    return nb_error(NB_ERR_UNSUPPORTED, "%s: tensor '%s' has data type %d (%s), not supported",
                    file, nm, t->elem_type, nb_onnx_type_name(t->elem_type));
  if (external) { /* the bytes live in another file: read them as raw_data */
    if (numel == INT64_MAX)
      return nb_error(NB_ERR_FORMAT, "%s: byte %zu: tensor '%s' has a shape larger than any file",
                      file, base, nm);
    if ((st = ox_read_external(a, file, base, nm, &ext, (uint64_t)numel * type_size(t->elem_type),
                               &raw, &raw_len)))
      return st;
    has_raw = 1;
  }
  /* the stored element count must match the shape exactly: this is what
   * bounds the allocations below by the file size */
  size_t have;
  if (has_raw) {
    size_t es = type_size(t->elem_type);
    if (raw_len % es || (uint64_t)(raw_len / es) != (uint64_t)numel)
      return nb_error(NB_ERR_FORMAT,
                      "%s: byte %zu: tensor '%s': raw_data holds %zu bytes, its "
                      "shape needs %" PRId64 " elements of %zu bytes",
                      file, base, nm, raw_len, numel, es);
    have = raw_len / es;
  } else if (t->elem_type == NB_ONNX_FLOAT) {
    have = n_f;
  } else if (t->elem_type == NB_ONNX_DOUBLE) {
    have = n_d;
  } else if (t->elem_type == NB_ONNX_INT64 || t->elem_type == NB_ONNX_UINT32 ||
             t->elem_type == NB_ONNX_UINT64) {
    have = n_i64;
  } else {
    have = n_i32; /* int8/16/32, uint8/16, bool, float16, bfloat16 */
  }
  if (numel == INT64_MAX)
    return nb_error(NB_ERR_FORMAT, "%s: byte %zu: tensor '%s' has a shape larger than any file",
                    file, base, nm);
  if ((uint64_t)have != (uint64_t)numel)
    return nb_error(NB_ERR_FORMAT,
                    "%s: byte %zu: tensor '%s' holds %zu values, its shape needs "
                    "%" PRId64,
                    file, base, nm, have, numel);
  size_t n = (size_t)numel;
  if (fl) {
    t->f32 = ox_alloc(a, (n ? n : 1) * sizeof(float));
    if (!t->f32) return oom();
    for (size_t i = 0; i < n; i++) {
      if (has_raw)
        t->f32[i] = raw_float(t->elem_type, raw + i * type_size(t->elem_type));
      else if (t->elem_type == NB_ONNX_FLOAT)
        t->f32[i] = bits_to_f32((uint32_t)fv[i]);
      else if (t->elem_type == NB_ONNX_DOUBLE)
        t->f32[i] = (float)bits_to_f64(dv[i]);
      else if (t->elem_type == NB_ONNX_FLOAT16)
        t->f32[i] = nb_f16_to_f32((uint16_t)i32v[i]);
      else
        t->f32[i] = nb_bf16_to_f32((uint16_t)i32v[i]);
    }
  } else {
    t->i64 = ox_alloc(a, (n ? n : 1) * sizeof(int64_t));
    if (!t->i64) return oom();
    for (size_t i = 0; i < n; i++) {
      if (has_raw) {
        t->i64[i] = raw_int(t->elem_type, raw + i * type_size(t->elem_type));
      } else {
        int64_t v = (t->elem_type == NB_ONNX_INT64 || t->elem_type == NB_ONNX_UINT32 ||
                     t->elem_type == NB_ONNX_UINT64)
                        ? i64v[i]
                        : i32v[i];
        if (t->elem_type == NB_ONNX_INT32) v = (int32_t)v;
        if (t->elem_type == NB_ONNX_BOOL) v = v != 0;
        t->i64[i] = v;
      }
    }
  }
  *out = t;
  return NB_OK;
}

/* ---- files ------------------------------------------------------------------------ */

/* Reads a whole file into malloc'ed memory. */
static nb_status read_file(const char *path, uint8_t **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0) {
    fclose(f);
    return nb_error(NB_ERR_IO, "%s: cannot seek", path);
  }
  long sz = ftell(f);
  if (sz < 0 || (unsigned long)sz > OX_MAX_FILE) {
    fclose(f);
    return nb_error(NB_ERR_FORMAT, "%s: size %ld is not a valid protobuf message size", path, sz);
  }
  rewind(f);
  uint8_t *buf = malloc((size_t)sz + 1);
  if (!buf) {
    fclose(f);
    return oom();
  }
  size_t got = fread(buf, 1, (size_t)sz, f);
  fclose(f);
  if (got != (size_t)sz) {
    free(buf);
    return nb_error(NB_ERR_IO, "%s: short read at byte %zu", path, got);
  }
  *out = buf;
  *len = got;
  return NB_OK;
}

nb_status nb_onnx_tensor_decode(const void *buf, size_t len, const char *name,
                                nb_onnx_tensor **out) {
  if (!out || (!buf && len)) return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_tensor_decode: NULL");
  *out = NULL;
  ox_arena *a = ox_arena_new();
  if (!a) return oom();
  /* the file name must outlive the tensor for later messages */
  const char *nm = name ? name : "<buffer>";
  char *file = ox_alloc(a, strlen(nm) + 1);
  if (!file) {
    ox_arena_free(a);
    return oom();
  }
  strcpy(file, nm);
  nb_onnx_tensor *t;
  nb_status st = ox_decode_tensor(a, buf, len, 0, file, &t);
  if (st) {
    ox_arena_free(a);
    return st;
  }
  t->owner_ = a;
  *out = t;
  return NB_OK;
}

nb_status nb_onnx_tensor_load(const char *path, nb_onnx_tensor **out) {
  if (!path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_tensor_load: NULL argument");
  *out = NULL;
  uint8_t *buf;
  size_t len;
  nb_status st = read_file(path, &buf, &len);
  if (st) return st;
  st = nb_onnx_tensor_decode(buf, len, path, out);
  free(buf);
  return st;
}

void nb_onnx_tensor_free(nb_onnx_tensor *t) {
  if (t) ox_arena_free(t->owner_);
}

/* ---- model messages --------------------------------------------------------------- */

static nb_status dec_attr(ox_ctx *c, nb_pb_reader *r, ox_attr *at) {
  nb_status st;
  size_t nfl, nin, nstr;
  if ((st = count_field(r, 7, 4, &nfl)) || (st = count_field(r, 8, 0, &nin)) ||
      (st = count_field(r, 9, -1, &nstr)))
    return st;
  at->floats = ox_alloc(c->a, (nfl ? nfl : 1) * sizeof(float));
  uint64_t *fb = ox_alloc(c->a, (nfl ? nfl : 1) * sizeof(uint64_t));
  at->ints = ox_alloc(c->a, (nin ? nin : 1) * sizeof(int64_t));
  if (!at->floats || !fb || !at->ints) return oom();
  at->name = "";
  at->s = "";
  size_t n_f = 0, n_i = 0;
  while (!nb_pb_done(r)) {
    size_t pos = r->pos;
    uint32_t f;
    int w;
    uint64_t v;
    uint32_t v32;
    if ((st = nb_pb_read_tag(r, &f, &w))) return st;
    switch (f) {
    case 1:
      if (!(st = want_wire(r, pos, w, NB_PB_LEN, "AttributeProto.name")))
        st = read_string(c, r, &at->name);
      break;
    case 2:
      if (!(st = want_wire(r, pos, w, NB_PB_FIXED32, "AttributeProto.f")) &&
          !(st = nb_pb_read_fixed32(r, &v32)))
        at->f = bits_to_f32(v32);
      break;
    case 3:
      if (!(st = want_wire(r, pos, w, NB_PB_VARINT, "AttributeProto.i")) &&
          !(st = nb_pb_read_varint(r, &v)))
        at->i = (int64_t)v;
      break;
    case 4:
      if (!(st = want_wire(r, pos, w, NB_PB_LEN, "AttributeProto.s")))
        st = read_string(c, r, &at->s);
      break;
    case 5: {
      nb_pb_reader sub;
      if (!(st = want_wire(r, pos, w, NB_PB_LEN, "AttributeProto.t")) &&
          !(st = nb_pb_read_sub(r, &sub)))
        st = ox_decode_tensor(c->a, sub.buf, sub.len, sub.base, c->file, &at->t);
      break;
    }
    case 7: st = read_fixed(r, w, 4, fb, nfl, &n_f); break;
    case 8: st = read_varints(r, w, at->ints, nin, &n_i); break;
    case 9:
      at->nstrings++;
      st = nb_pb_skip(r, w);
      break;
    case 20:
      if (!(st = want_wire(r, pos, w, NB_PB_VARINT, "AttributeProto.type")) &&
          !(st = nb_pb_read_varint(r, &v)))
        at->type = (int)v;
      break;
    default: st = nb_pb_skip(r, w); break;
    }
    if (st) return st;
  }
  for (size_t i = 0; i < n_f; i++) at->floats[i] = bits_to_f32((uint32_t)fb[i]);
  at->nfloats = (int)n_f;
  at->nints = (int)n_i;
  return NB_OK;
}

static nb_status dec_node(ox_ctx *c, nb_pb_reader *r, ox_node *nd) {
  nb_status st;
  size_t nin, nout, nattr;
  if ((st = count_field(r, 1, -1, &nin)) || (st = count_field(r, 2, -1, &nout)) ||
      (st = count_field(r, 5, -1, &nattr)))
    return st;
  nd->in = ox_alloc(c->a, (nin + 1) * sizeof(char *));
  nd->out = ox_alloc(c->a, (nout + 1) * sizeof(char *));
  nd->attr = ox_alloc(c->a, (nattr + 1) * sizeof(ox_attr));
  if (!nd->in || !nd->out || !nd->attr) return oom();
  nd->name = nd->op_type = nd->domain = "";
  while (!nb_pb_done(r)) {
    size_t pos = r->pos;
    uint32_t f;
    int w;
    if ((st = nb_pb_read_tag(r, &f, &w))) return st;
    if (f == 1 || f == 2 || f == 3 || f == 4 || f == 5 || f == 7)
      if ((st = want_wire(r, pos, w, NB_PB_LEN, "NodeProto field"))) return st;
    switch (f) {
    case 1: st = read_string(c, r, &nd->in[nd->nin++]); break;
    case 2: st = read_string(c, r, &nd->out[nd->nout++]); break;
    case 3: st = read_string(c, r, &nd->name); break;
    case 4: st = read_string(c, r, &nd->op_type); break;
    case 7: st = read_string(c, r, &nd->domain); break;
    case 5: {
      nb_pb_reader sub;
      if (!(st = nb_pb_read_sub(r, &sub))) st = dec_attr(c, &sub, &nd->attr[nd->nattr++]);
      break;
    }
    default: st = nb_pb_skip(r, w); break;
    }
    if (st) return st;
  }
  return NB_OK;
}

/* TensorShapeProto: dims of known size, -1 for symbolic or missing ones. */
static nb_status dec_shape(ox_ctx *c, nb_pb_reader *r, ox_value_info *vi) {
  nb_status st;
  vi->ndim = 0;
  while (!nb_pb_done(r)) {
    size_t pos = r->pos;
    uint32_t f;
    int w;
    if ((st = nb_pb_read_tag(r, &f, &w))) return st;
    if (f != 1) {
      if ((st = nb_pb_skip(r, w))) return st;
      continue;
    }
    nb_pb_reader dim;
    if ((st = want_wire(r, pos, w, NB_PB_LEN, "TensorShapeProto.dim")) ||
        (st = nb_pb_read_sub(r, &dim)))
      return st;
    if (vi->ndim >= NB_MAX_DIMS) return pb_fail(r, pos, "value has more than 8 dimensions");
    int64_t d = -1;
    while (!nb_pb_done(&dim)) {
      uint32_t df;
      int dw;
      uint64_t v;
      if ((st = nb_pb_read_tag(&dim, &df, &dw))) return st;
      if (df == 1 && dw == NB_PB_VARINT) {
        if ((st = nb_pb_read_varint(&dim, &v))) return st;
        d = (int64_t)v < 0 ? -1 : (int64_t)v;
      } else if ((st = nb_pb_skip(&dim, dw))) {
        return st; /* dim_param (2) and denotation (3): symbolic */
      }
    }
    vi->dims[vi->ndim++] = d;
  }
  (void)c;
  return NB_OK;
}

static nb_status dec_value_info(ox_ctx *c, nb_pb_reader *r, ox_value_info *vi) {
  nb_status st;
  vi->name = "";
  vi->ndim = -1;
  while (!nb_pb_done(r)) {
    size_t pos = r->pos;
    uint32_t f;
    int w;
    if ((st = nb_pb_read_tag(r, &f, &w))) return st;
    if (f == 1) {
      if (!(st = want_wire(r, pos, w, NB_PB_LEN, "ValueInfoProto.name")))
        st = read_string(c, r, &vi->name);
    } else if (f == 2 && w == NB_PB_LEN) { /* TypeProto */
      nb_pb_reader tp;
      if ((st = nb_pb_read_sub(r, &tp))) return st;
      while (!nb_pb_done(&tp)) {
        uint32_t tf;
        int tw;
        if ((st = nb_pb_read_tag(&tp, &tf, &tw))) return st;
        if (tf != 1 || tw != NB_PB_LEN) { /* sequence, map, optional: not tensors */
          if ((st = nb_pb_skip(&tp, tw))) return st;
          continue;
        }
        nb_pb_reader tt;
        if ((st = nb_pb_read_sub(&tp, &tt))) return st;
        while (!nb_pb_done(&tt)) {
          uint32_t ef;
          int ew;
          uint64_t v;
          if ((st = nb_pb_read_tag(&tt, &ef, &ew))) return st;
          if (ef == 1 && ew == NB_PB_VARINT) {
            if ((st = nb_pb_read_varint(&tt, &v))) return st;
            vi->elem_type = (int)v;
          } else if (ef == 2 && ew == NB_PB_LEN) {
            nb_pb_reader sh;
            if ((st = nb_pb_read_sub(&tt, &sh)) || (st = dec_shape(c, &sh, vi))) return st;
          } else if ((st = nb_pb_skip(&tt, ew))) {
            return st;
          }
        }
      }
    } else {
      st = nb_pb_skip(r, w);
    }
    if (st) return st;
  }
  return NB_OK;
}

static nb_status dec_graph(ox_ctx *c, nb_pb_reader *r, nb_onnx_model *m) {
  nb_status st;
  size_t nn, ni, nin, nout;
  if ((st = count_field(r, 1, -1, &nn)) || (st = count_field(r, 5, -1, &ni)) ||
      (st = count_field(r, 11, -1, &nin)) || (st = count_field(r, 12, -1, &nout)))
    return st;
  m->node = ox_alloc(c->a, (nn + 1) * sizeof(ox_node));
  m->init = ox_alloc(c->a, (ni + 1) * sizeof(nb_onnx_tensor *));
  m->input = ox_alloc(c->a, (nin + 1) * sizeof(ox_value_info));
  m->output = ox_alloc(c->a, (nout + 1) * sizeof(ox_value_info));
  m->feed = ox_alloc(c->a, (nin + 1) * sizeof(int));
  if (!m->node || !m->init || !m->input || !m->output || !m->feed) return oom();
  while (!nb_pb_done(r)) {
    size_t pos = r->pos;
    uint32_t f;
    int w;
    if ((st = nb_pb_read_tag(r, &f, &w))) return st;
    if (f != 1 && f != 5 && f != 11 && f != 12) {
      if ((st = nb_pb_skip(r, w))) return st;
      continue;
    }
    nb_pb_reader sub;
    if ((st = want_wire(r, pos, w, NB_PB_LEN, "GraphProto field")) ||
        (st = nb_pb_read_sub(r, &sub)))
      return st;
    switch (f) {
    case 1: st = dec_node(c, &sub, &m->node[m->nnode++]); break;
    case 5:
      st = ox_decode_tensor(c->a, sub.buf, sub.len, sub.base, c->file, &m->init[m->ninit]);
      if (!st) m->ninit++;
      break;
    case 11: st = dec_value_info(c, &sub, &m->input[m->ninput++]); break;
    case 12: st = dec_value_info(c, &sub, &m->output[m->noutput++]); break;
    }
    if (st) return st;
  }
  for (int i = 0; i < m->ninput; i++) {
    int is_init = 0;
    for (int j = 0; j < m->ninit && !is_init; j++)
      is_init = !strcmp(m->init[j]->name, m->input[i].name);
    if (!is_init) m->feed[m->nfeed++] = i;
  }
  return NB_OK;
}

static nb_status dec_model(ox_ctx *c, nb_pb_reader *r, nb_onnx_model *m) {
  nb_status st;
  size_t nop;
  if ((st = count_field(r, 8, -1, &nop))) return st;
  m->opset = ox_alloc(c->a, (nop + 1) * sizeof(ox_opset));
  if (!m->opset) return oom();
  int has_graph = 0;
  while (!nb_pb_done(r)) {
    size_t pos = r->pos;
    uint32_t f;
    int w;
    uint64_t v;
    if ((st = nb_pb_read_tag(r, &f, &w))) return st;
    if (f == 1) {
      if (!(st = want_wire(r, pos, w, NB_PB_VARINT, "ModelProto.ir_version")) &&
          !(st = nb_pb_read_varint(r, &v)))
        m->ir_version = (int64_t)v;
    } else if (f == 8) {
      nb_pb_reader sub;
      if ((st = want_wire(r, pos, w, NB_PB_LEN, "ModelProto.opset_import")) ||
          (st = nb_pb_read_sub(r, &sub)))
        return st;
      ox_opset *o = &m->opset[m->nopset++];
      o->domain = "";
      while (!st && !nb_pb_done(&sub)) {
        size_t p2 = sub.pos;
        uint32_t f2;
        int w2;
        if ((st = nb_pb_read_tag(&sub, &f2, &w2))) break;
        if (f2 == 1) {
          if (!(st = want_wire(&sub, p2, w2, NB_PB_LEN, "OperatorSetIdProto.domain")))
            st = read_string(c, &sub, &o->domain);
        } else if (f2 == 2) {
          if (!(st = want_wire(&sub, p2, w2, NB_PB_VARINT, "OperatorSetIdProto.version")) &&
              !(st = nb_pb_read_varint(&sub, &v)))
            o->version = (int64_t)v;
        } else {
          st = nb_pb_skip(&sub, w2);
        }
      }
    } else if (f == 7) {
      nb_pb_reader sub;
      if ((st = want_wire(r, pos, w, NB_PB_LEN, "ModelProto.graph")) ||
          (st = nb_pb_read_sub(r, &sub)))
        return st;
      if (has_graph) return pb_fail(r, pos, "model has two graphs");
      has_graph = 1;
      st = dec_graph(c, &sub, m);
    } else {
      st = nb_pb_skip(r, w);
    }
    if (st) return st;
  }
  if (!has_graph) return nb_error(NB_ERR_FORMAT, "%s: not an ONNX model (no graph)", c->file);
  return NB_OK;
}

nb_status nb_onnx_load_buffer(const void *buf, size_t len, const char *name, nb_onnx_model **out) {
  if (!out || (!buf && len)) return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_load_buffer: NULL");
  *out = NULL;
  ox_arena *a = ox_arena_new();
  nb_onnx_model *m = a ? ox_alloc(a, sizeof *m) : NULL;
  const char *nm = name ? name : "<buffer>";
  char *file = m ? ox_alloc(a, strlen(nm) + 1) : NULL;
  if (!file) {
    ox_arena_free(a);
    return oom();
  }
  strcpy(file, nm);
  m->arena = a;
  m->path = file;
  ox_ctx c = {a, file};
  nb_pb_reader r;
  nb_pb_init(&r, buf, len, file);
  nb_status st = dec_model(&c, &r, m);
  if (st) {
    ox_arena_free(a);
    return st;
  }
  *out = m;
  return NB_OK;
}

nb_status nb_onnx_load(const char *path, nb_onnx_model **out) {
  if (!path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_load: NULL argument");
  *out = NULL;
  uint8_t *buf;
  size_t len;
  nb_status st = read_file(path, &buf, &len);
  if (st) return st;
  st = nb_onnx_load_buffer(buf, len, path, out);
  free(buf);
  return st;
}

void nb_onnx_free(nb_onnx_model *m) {
  if (m) ox_arena_free(m->arena);
}

int64_t nb_onnx_ir_version(const nb_onnx_model *m) { return m ? m->ir_version : 0; }

int64_t nb_onnx_opset(const nb_onnx_model *m, const char *domain) {
  if (!m) return 0;
  if (!domain || !strcmp(domain, "ai.onnx")) domain = "";
  int64_t v = 0;
  for (int i = 0; i < m->nopset; i++) {
    const char *d = !strcmp(m->opset[i].domain, "ai.onnx") ? "" : m->opset[i].domain;
    if (!strcmp(d, domain) && m->opset[i].version > v) v = m->opset[i].version;
  }
  return v;
}

int nb_onnx_node_count(const nb_onnx_model *m) { return m ? m->nnode : 0; }

const char *nb_onnx_node_op(const nb_onnx_model *m, int i) {
  return m && i >= 0 && i < m->nnode ? m->node[i].op_type : NULL;
}

int nb_onnx_input_count(const nb_onnx_model *m) { return m ? m->nfeed : 0; }

nb_status nb_onnx_input_info(const nb_onnx_model *m, int i, const char **name, int *elem_type,
                             int *ndim, const int64_t **dims) {
  if (!m || i < 0 || i >= m->nfeed)
    return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_input_info: no input %d", i);
  const ox_value_info *v = &m->input[m->feed[i]];
  if (name) *name = v->name;
  if (elem_type) *elem_type = v->elem_type;
  if (ndim) *ndim = v->ndim;
  if (dims) *dims = v->dims;
  return NB_OK;
}

int nb_onnx_output_count(const nb_onnx_model *m) { return m ? m->noutput : 0; }

nb_status nb_onnx_output_info(const nb_onnx_model *m, int i, const char **name, int *elem_type) {
  if (!m || i < 0 || i >= m->noutput)
    return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_output_info: no output %d", i);
  if (name) *name = m->output[i].name;
  if (elem_type) *elem_type = m->output[i].elem_type;
  return NB_OK;
}
