/* TensorBoard event files: TFRecord framing around hand-encoded Event
 * protobufs. Only what scalar curves need is encoded, which keeps nabla free
 * of a protobuf dependency for logging:
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
 *             Summary summary = 5; }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; }
 * Record: u64 length, u32 masked crc(length), data, u32 masked crc(data). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nabla/io.h"

struct nb_tb_writer {
  FILE *fp;
  char *path;
};

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

static size_t put_varint(unsigned char *p, uint64_t v) {
  size_t n = 0;
  do {
    p[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return n;
}

static size_t put_key(unsigned char *p, int field, int wire) {
  return put_varint(p, (uint64_t)(field << 3 | wire));
}

static size_t put_le(unsigned char *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
  return (size_t)bytes;
}

static uint32_t masked_crc(const unsigned char *p, size_t n) {
  uint32_t c = nb_crc32c(0, p, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static nb_status write_record(nb_tb_writer *w, const unsigned char *data, size_t n) {
  unsigned char head[12], tail[4];
  put_le(head, n, 8);
  put_le(head + 8, masked_crc(head, 8), 4);
  put_le(tail, masked_crc(data, n), 4);
  if (fwrite(head, 1, 12, w->fp) != 12 || fwrite(data, 1, n, w->fp) != n ||
      fwrite(tail, 1, 4, w->fp) != 4)
    return nb_error(NB_ERR_IO, "%s: write of a %zu-byte event failed: %s", w->path, n,
                    strerror(errno));
  return NB_OK;
}

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v > 0x7f) {
    v >>= 7;
    n++;
  }
  return n;
}

/* The Event fields every event starts with: wall_time and step. At most 20
 * bytes. */
static size_t event_head(unsigned char *buf, int64_t step) {
  double t = now();
  uint64_t bits;
  memcpy(&bits, &t, 8);
  size_t n = put_key(buf, 1, WIRE_FIXED64);
  n += put_le(buf + n, bits, 8);
  if (step) { /* proto3 leaves zero fields out */
    n += put_key(buf + n, 2, WIRE_VARINT);
    n += put_varint(buf + n, (uint64_t)step); /* negative: 10-byte two's complement */
  }
  return n;
}

nb_status nb_tb_scalar(nb_tb_writer *w, const char *tag, int64_t step, float value) {
  if (!w || !tag) return nb_error(NB_ERR_INVALID_ARG, "nb_tb_scalar: NULL argument");
  /* sizes inside out: each message is length-prefixed by its parent */
  size_t tlen = strlen(tag);
  size_t value_len = 1 + varint_len(tlen) + tlen + 1 + 4;
  size_t summary_len = 1 + varint_len(value_len) + value_len;
  size_t cap = 20 + 1 + varint_len(summary_len) + summary_len;
  unsigned char small[256];
  unsigned char *buf = cap <= sizeof small ? small : malloc(cap);
  if (!buf) return nb_error(NB_ERR_OOM, "nb_tb_scalar '%s': out of memory", tag);
  size_t n = event_head(buf, step);
  n += put_key(buf + n, 5, WIRE_LEN); /* Event.summary */
  n += put_varint(buf + n, summary_len);
  n += put_key(buf + n, 1, WIRE_LEN); /* Summary.value */
  n += put_varint(buf + n, value_len);
  n += put_key(buf + n, 1, WIRE_LEN); /* Value.tag */
  n += put_varint(buf + n, tlen);
  memcpy(buf + n, tag, tlen);
  n += tlen;
  uint32_t fbits;
  memcpy(&fbits, &value, 4);
  n += put_key(buf + n, 2, WIRE_FIXED32); /* Value.simple_value */
  n += put_le(buf + n, fbits, 4);
  nb_status s = write_record(w, buf, n);
  if (buf != small) free(buf);
  return s;
}

nb_status nb_tb_flush(nb_tb_writer *w) {
  if (!w) return nb_error(NB_ERR_INVALID_ARG, "nb_tb_flush: NULL argument");
  if (fflush(w->fp)) return nb_error(NB_ERR_IO, "%s: flush failed: %s", w->path, strerror(errno));
  return NB_OK;
}

nb_status nb_tb_close(nb_tb_writer *w) {
  if (!w) return NB_OK;
  nb_status s = NB_OK;
  if (fclose(w->fp)) s = nb_error(NB_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
  free(w->path);
  free(w);
  return s;
}

const char *nb_tb_path(const nb_tb_writer *w) { return w ? w->path : NULL; }

/* Opens a fresh event file, never appending to another writer's file. */
static nb_status create_file(nb_tb_writer *w, const char *logdir) {
  char host[256];
  if (gethostname(host, sizeof host)) strcpy(host, "localhost");
  host[sizeof host - 1] = '\0';
  for (char *c = host; *c; c++)
    if (*c == '/') *c = '_';
  size_t cap = strlen(logdir) + strlen(host) + 64;
  if (!(w->path = malloc(cap))) return nb_error(NB_ERR_OOM, "%s: out of memory", logdir);
  long long t = (long long)time(NULL);
  int fd = -1;
  for (int k = 0; k < 100 && fd < 0; k++) {
    int len = snprintf(w->path, cap, "%s/events.out.tfevents.%010lld.%s", logdir, t, host);
    if (k) snprintf(w->path + len, cap - (size_t)len, ".%d", k);
    fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) return nb_error(NB_ERR_IO, "%s: cannot create: %s", w->path, strerror(errno));
  if (!(w->fp = fdopen(fd, "wb"))) {
    close(fd);
    return nb_error(NB_ERR_IO, "%s: fdopen: %s", w->path, strerror(errno));
  }
  return NB_OK;
}

nb_status nb_tb_open(const char *logdir, nb_tb_writer **out) {
  if (!logdir || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_tb_open: NULL argument");
  *out = NULL;
  nb_status s = nb_mkdirs(logdir);
  if (s) return s;
  nb_tb_writer *w = calloc(1, sizeof *w);
  if (!w) return nb_error(NB_ERR_OOM, "nb_tb_open %s: out of memory", logdir);
  s = create_file(w, logdir);
  if (!s) {
    static const char version[] = "brain.Event:2";
    unsigned char event[64];
    size_t n = event_head(event, 0);
    n += put_key(event + n, 3, WIRE_LEN); /* Event.file_version */
    n += put_varint(event + n, sizeof version - 1);
    memcpy(event + n, version, sizeof version - 1);
    n += sizeof version - 1;
    s = write_record(w, event, n);
    /* flushed now so TensorBoard sees a valid file even before any scalar */
    if (!s) s = nb_tb_flush(w);
  }
  if (s) {
    if (w->fp) {
      fclose(w->fp);
      unlink(w->path);
    }
    free(w->path);
    free(w);
    return s;
  }
  *out = w;
  return NB_OK;
}
