/* IDX reader (MNIST). Format: 2 zero bytes, a type code, a rank, then rank
 * big-endian u32 dimensions and the data, big-endian. gzip is read through
 * zlib, which also reads uncompressed files transparently. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "nabla/data.h"

static nb_status read_exact(gzFile f, void *dst, size_t n, const char *path, size_t *pos,
                            const char *what) {
  size_t done = 0;
  while (done < n) {
    unsigned chunk = n - done > (1u << 30) ? (1u << 30) : (unsigned)(n - done);
    int r = gzread(f, (unsigned char *)dst + done, chunk);
    if (r <= 0) {
      int err;
      const char *msg = gzerror(f, &err);
      return nb_error(NB_ERR_FORMAT, "%s: truncated or corrupt at byte %zu while reading %s%s%s",
                      path, *pos + done, what, err < 0 ? ": " : "", err < 0 ? msg : "");
    }
    done += (size_t)r;
  }
  *pos += n;
  return NB_OK;
}

/* Reads n bytes into a buffer that grows as they arrive (1 MiB, then
 * doubling): n comes from the header's dimensions, so a short or hostile
 * file that claims 2^40 elements fails after reading what it holds, having
 * allocated about that much, never n bytes up front. */
static nb_status read_grown(gzFile f, size_t n, const char *path, size_t *pos,
                            unsigned char **out) {
  size_t cap = 0, done = 0;
  unsigned char *buf = NULL;
  nb_status st = NB_OK;
  while (!st && (done < n || !buf)) {
    if (done == cap) {
      size_t want = cap ? (cap > n / 2 ? n : 2 * cap) : (n < (1u << 20) ? n : (1u << 20));
      unsigned char *b = realloc(buf, want + 1);
      if (!b) {
        st = nb_error(NB_ERR_OOM, "%s: out of memory after %zu bytes of data", path, done);
        break;
      }
      buf = b;
      cap = want;
    }
    size_t before = *pos;
    st = read_exact(f, buf + done, cap - done, path, pos, "the data");
    done += *pos - before;
  }
  if (st) {
    free(buf);
    return st;
  }
  *out = buf;
  return NB_OK;
}

static uint32_t be32(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

nb_status nb_idx_load(const char *path, nb_idx *out) {
  if (!path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_idx_load: NULL argument");
  memset(out, 0, sizeof *out);
  gzFile f = gzopen(path, "rb");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  unsigned char head[4];
  size_t pos = 0;
  nb_status st = read_exact(f, head, 4, path, &pos, "the header");
  if (!st && (head[0] || head[1]))
    st = nb_error(NB_ERR_FORMAT, "%s: not an IDX file (bad magic %02x %02x at byte 0)", path,
                  head[0], head[1]);
  int type = head[2], ndim = head[3];
  size_t src_size = 0;
  nb_dtype dt = NB_U8;
  switch (type) {
  case 0x08:
    src_size = 1;
    dt = NB_U8;
    break;
  case 0x09:
    src_size = 1;
    dt = NB_I32;
    break;
  case 0x0B:
    src_size = 2;
    dt = NB_I32;
    break;
  case 0x0C:
    src_size = 4;
    dt = NB_I32;
    break;
  case 0x0D:
    src_size = 4;
    dt = NB_F32;
    break;
  case 0x0E:
    src_size = 8;
    dt = NB_F32;
    break;
  default:
    if (!st) st = nb_error(NB_ERR_FORMAT, "%s: unknown IDX type code 0x%02x at byte 2", path, type);
  }
  if (!st && (ndim < 1 || ndim > NB_MAX_DIMS))
    st = nb_error(NB_ERR_FORMAT, "%s: rank %d at byte 3 is outside [1, %d]", path, ndim,
                  NB_MAX_DIMS);
  int64_t numel = 1;
  for (int i = 0; !st && i < ndim; i++) {
    unsigned char b[4];
    st = read_exact(f, b, 4, path, &pos, "the dimensions");
    if (st) break;
    out->shape[i] = be32(b);
    if (out->shape[i] > 0 && numel > ((int64_t)1 << 40) / out->shape[i]) {
      st = nb_error(NB_ERR_FORMAT, "%s: dimensions too large at byte %zu", path, pos - 4);
      break;
    }
    numel *= out->shape[i];
  }
  unsigned char *raw = NULL;
  if (!st) st = read_grown(f, (size_t)numel * src_size, path, &pos, &raw);
  if (!st) {
    out->data = malloc((size_t)numel * nb_dtype_size(dt) + 1);
    if (!out->data) st = nb_error(NB_ERR_OOM, "%s: out of memory", path);
  }
  if (!st) {
    /* one byte more: there must be none, and reaching the end of a gzip
     * stream is where zlib checks its CRC and length (a stream cut short
     * reads as the end of the file, with Z_BUF_ERROR in gzerror) */
    unsigned char extra;
    int r = gzread(f, &extra, 1), err = Z_OK;
    const char *msg = r <= 0 ? gzerror(f, &err) : NULL;
    if (r > 0)
      st = nb_error(NB_ERR_FORMAT, "%s: unexpected data after byte %zu (dimensions say %lld items)",
                    path, pos, (long long)numel);
    else if (err != Z_OK)
      st = nb_error(NB_ERR_FORMAT, "%s: corrupt or truncated gzip data after byte %zu: %s", path,
                    pos, msg);
  }
  if (!st) {
    out->dtype = dt;
    out->ndim = ndim;
    for (int64_t i = 0; i < numel; i++) {
      const unsigned char *s = raw + (size_t)i * src_size;
      switch (type) {
      case 0x08: ((uint8_t *)out->data)[i] = s[0]; break;
      case 0x09: ((int32_t *)out->data)[i] = (int8_t)s[0]; break;
      case 0x0B: ((int32_t *)out->data)[i] = (int16_t)(s[0] << 8 | s[1]); break;
      case 0x0C: ((int32_t *)out->data)[i] = (int32_t)be32(s); break;
      case 0x0D: {
        uint32_t u = be32(s);
        memcpy((float *)out->data + i, &u, 4);
        break;
      }
      default: {
        uint64_t u = (uint64_t)be32(s) << 32 | be32(s + 4);
        double d;
        memcpy(&d, &u, 8);
        ((float *)out->data)[i] = (float)d;
      }
      }
    }
  }
  free(raw);
  gzclose(f);
  if (st) nb_idx_free(out);
  return st;
}

void nb_idx_free(nb_idx *idx) {
  if (!idx) return;
  free(idx->data);
  memset(idx, 0, sizeof *idx);
}
