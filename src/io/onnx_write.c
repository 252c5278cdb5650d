/* A protobuf wire-format writer, the mirror of the reader in onnx_proto.c:
 * varints, tags, fixed-width values, length-delimited bytes, packed integer
 * fields and nested messages, appended to one growable buffer.
 *
 * A nested message's length comes before its content, and is not known
 * until the content is written. nb_pb_begin() leaves one byte for it, which
 * holds any length below 128 (every attribute, shape and name); a longer
 * message's content is moved up by the few extra bytes its length needs when
 * it ends. A large tensor is therefore moved once per level it is nested in
 * (tensor, graph, model), with no second buffer.
 *
 * Errors are sticky: after an allocation fails or a message outgrows
 * protobuf's 2 GiB limit, every call does nothing and w->status keeps the
 * first error, so a writer is checked once, at the end. */
#include <stdlib.h>
#include <string.h>

#include "nabla/onnx.h"

/* protobuf's hard limit on a serialized message (the reader's too) */
#define PB_MAX ((size_t)INT32_MAX)

void nb_pb_writer_init(nb_pb_writer *w) { memset(w, 0, sizeof *w); }

void nb_pb_writer_free(nb_pb_writer *w) {
  if (!w) return;
  free(w->buf);
  memset(w, 0, sizeof *w);
}

static int grow(nb_pb_writer *w, size_t extra) {
  if (w->status) return 0;
  if (extra > PB_MAX - w->len) {
    w->status = nb_error(NB_ERR_UNSUPPORTED,
                         "onnx: the model is larger than protobuf's 2 GiB limit (ONNX external "
                         "data is not written yet)");
    return 0;
  }
  if (w->len + extra <= w->cap) return 1;
  size_t cap = w->cap ? w->cap : 256;
  while (cap < w->len + extra) cap = cap > PB_MAX / 2 ? PB_MAX : cap * 2;
  uint8_t *p = realloc(w->buf, cap);
  if (!p) {
    w->status = nb_error(NB_ERR_OOM, "onnx: out of memory writing %zu bytes", cap);
    return 0;
  }
  w->buf = p;
  w->cap = cap;
  return 1;
}

static void put(nb_pb_writer *w, const void *data, size_t n) {
  if (!n || !grow(w, n)) return;
  memcpy(w->buf + w->len, data, n);
  w->len += n;
}

/* Encodes v into out (at most 10 bytes); returns the byte count. */
static size_t varint_encode(uint64_t v, uint8_t *out) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

void nb_pb_write_raw(nb_pb_writer *w, const void *data, size_t n) { put(w, data, n); }

void nb_pb_write_varint(nb_pb_writer *w, uint64_t v) {
  uint8_t b[10];
  size_t n = varint_encode(v, b);
  put(w, b, n);
}

void nb_pb_write_tag(nb_pb_writer *w, uint32_t field, int wire) {
  nb_pb_write_varint(w, (uint64_t)field << 3 | (uint64_t)(wire & 7));
}

void nb_pb_write_int(nb_pb_writer *w, uint32_t field, int64_t v) {
  nb_pb_write_tag(w, field, NB_PB_VARINT);
  /* int32/int64/enum fields: a negative value is its 64-bit two's
   * complement, ten bytes on the wire */
  nb_pb_write_varint(w, (uint64_t)v);
}

void nb_pb_write_fixed32(nb_pb_writer *w, uint32_t field, uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  nb_pb_write_tag(w, field, NB_PB_FIXED32);
  put(w, b, 4);
}

void nb_pb_write_float(nb_pb_writer *w, uint32_t field, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  nb_pb_write_fixed32(w, field, u);
}

void nb_pb_write_bytes(nb_pb_writer *w, uint32_t field, const void *data, size_t n) {
  nb_pb_write_tag(w, field, NB_PB_LEN);
  nb_pb_write_varint(w, n);
  put(w, data, n);
}

void nb_pb_write_string(nb_pb_writer *w, uint32_t field, const char *s) {
  nb_pb_write_bytes(w, field, s ? s : "", s ? strlen(s) : 0);
}

void nb_pb_write_packed_int(nb_pb_writer *w, uint32_t field, const int64_t *v, size_t n) {
  size_t m = nb_pb_begin(w, field);
  for (size_t i = 0; i < n; i++) nb_pb_write_varint(w, (uint64_t)v[i]);
  nb_pb_end(w, m);
}

size_t nb_pb_begin(nb_pb_writer *w, uint32_t field) {
  nb_pb_write_tag(w, field, NB_PB_LEN);
  if (!grow(w, 1)) return 0;
  w->buf[w->len++] = 0; /* the length's first byte, filled in by nb_pb_end */
  return w->len;
}

void nb_pb_end(nb_pb_writer *w, size_t mark) {
  if (w->status) return;
  if (mark == 0 || mark > w->len) {
    w->status = nb_error(NB_ERR_INTERNAL, "onnx: nb_pb_end without a matching nb_pb_begin");
    return;
  }
  size_t n = w->len - mark;
  uint8_t b[10];
  size_t k = varint_encode(n, b);
  if (k > 1) {
    if (!grow(w, k - 1)) return;
    memmove(w->buf + mark + k - 1, w->buf + mark, n);
    w->len += k - 1;
  }
  memcpy(w->buf + mark - 1, b, k);
}
