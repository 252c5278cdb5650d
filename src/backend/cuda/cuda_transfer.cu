/* Host <-> device transfers of the CUDA backend: pinned and asynchronous.
 *
 * A copy from pageable memory (what a caller hands nb_plan_set_input) is
 * slow and may make the host wait for the whole stream: the driver stages
 * it through pinned memory of its own. So every transfer goes through a
 * ring of pinned staging slots of the backend's (NB_CUDA_SLOTS, each up
 * to NB_CUDA_SLOT_MAX bytes; larger transfers go in pieces):
 *
 * - upload: the host copies the data into a free slot and returns at once
 *   (the caller may reuse its buffer). A small upload (a label vector, a
 *   learning rate) is a pinned cudaMemcpyAsync on the compute stream. A
 *   large one (a batch of images) travels on the copy stream into a device
 *   landing buffer of the slot while the compute stream still runs the
 *   step before, and lands in place with a device-to-device copy on the
 *   compute stream, ordered after the kernels that still read the old
 *   data: the next batch uploads while the current step runs.
 * - download: device-to-host into slots on the compute stream, one stream
 *   sync, then copies out to the caller (and the fault record is read in
 *   the same sync, cuda_backend.cu).
 *
 * A slot is reused once its event says the transfers that read it are
 * done; the host waits there only when NB_CUDA_SLOTS transfers are still
 * queued behind a long step. The ring has a lock: with model parallelism a
 * device's thread may upload into another device (a transfer between
 * them). Where pinned memory cannot be had, a piece goes the old way
 * (cudaMemcpyAsync from the caller's pageable memory): slower, still right.
 * On an out-of-memory retry the allocator takes the landing buffers back
 * (nb_cuda_transfer_trim). */
#include <pthread.h>
#include <string.h>

#include <new>

#include "cuda_internal.h"

namespace {

const int NB_CUDA_SLOTS = 8;
const size_t NB_CUDA_SLOT_MAX = (size_t)8 << 20;
/* Uploads from this size on take the copy stream: below it the extra
 * device-to-device copy and event costs more than the overlap saves (an
 * H100 moves 64 KiB over PCIe in ~3 us). */
const size_t NB_CUDA_OVERLAP_MIN = (size_t)64 << 10;
/* Slots grow in steps of this, so that batches of varying size reuse them. */
const size_t NB_CUDA_SLOT_ROUND = (size_t)64 << 10;

struct slot {
  void *host = nullptr; /* pinned, cap bytes */
  void *land = nullptr; /* device landing buffer (cap_land bytes) or NULL */
  size_t cap = 0, cap_land = 0;
  cudaEvent_t up = nullptr;   /* copy stream: the host-to-device copy done */
  cudaEvent_t done = nullptr; /* the last transfer through the slot done */
  bool pending = false;       /* `done` recorded and not waited for yet */
};

} // namespace

struct nb_cuda_transfer {
  pthread_mutex_t lock;
  cudaStream_t copy = nullptr;
  slot s[NB_CUDA_SLOTS];
  int next = 0;
  uint64_t uploads = 0, overlapped = 0, waits = 0;
};

namespace {

size_t round_up(size_t n) {
  return (n + NB_CUDA_SLOT_ROUND - 1) / NB_CUDA_SLOT_ROUND * NB_CUDA_SLOT_ROUND;
}

/* The next slot of the ring, free (its last transfer done) and holding at
 * least `bytes` pinned bytes (host NULL where pinned memory cannot be had),
 * and `land` device bytes when asked. */
nb_status take_slot(nb_cuda *cu, size_t bytes, bool land, slot **out) {
  nb_cuda_transfer *x = cu->xfer;
  slot *s = &x->s[x->next];
  x->next = (x->next + 1) % NB_CUDA_SLOTS;
  if (s->pending) {
    if (cudaEventQuery(s->done) == cudaErrorNotReady) {
      x->waits++;
      /* "not ready" is recorded as the thread's last error: clear it, or
       * the next kernel launch check (cudaGetLastError) would report it */
      cudaGetLastError();
    }
    nb_status st =
        nb_cuda_check(cu, cudaEventSynchronize(s->done), "upload", "waiting for a staging buffer");
    if (st) return st;
    s->pending = false;
  }
  if (s->cap < bytes) {
    if (s->host) cudaFreeHost(s->host);
    s->host = nullptr;
    s->cap = 0;
    size_t want = round_up(bytes);
    if (cudaHostAlloc(&s->host, want, cudaHostAllocDefault) != cudaSuccess) {
      /* no pinned memory: the caller copies from (or to) pageable memory */
      cudaGetLastError();
      s->host = nullptr;
      *out = s;
      return NB_OK;
    }
    s->cap = want;
  }
  if (land && s->cap_land < bytes) {
    if (s->land) cudaFree(s->land);
    s->land = nullptr;
    s->cap_land = 0;
    size_t want = round_up(bytes);
    /* outside the caching allocator: a staging buffer is not a tensor and
     * its bytes would blur the plan's memory statistics */
    if (cudaMalloc(&s->land, want) != cudaSuccess) {
      cudaGetLastError();
      s->land = nullptr; /* no landing buffer: this upload goes direct */
    } else {
      s->cap_land = want;
    }
  }
  *out = s;
  return NB_OK;
}

/* One piece of an upload (at most NB_CUDA_SLOT_MAX bytes). */
nb_status upload_piece(nb_cuda *cu, char *dst, const char *src, size_t bytes) {
  nb_cuda_transfer *x = cu->xfer;
  bool overlap = x->copy && bytes >= NB_CUDA_OVERLAP_MIN;
  slot *s = nullptr;
  nb_status st = take_slot(cu, bytes, overlap, &s);
  if (st) return st;
  x->uploads++;
  if (!s->host) /* staged by the driver, which may wait for the stream */
    return nb_cuda_check(cu, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu->stream),
                         "upload", "host-to-device copy (pageable)");
  memcpy(s->host, src, bytes);
  if (overlap && s->land) {
    x->overlapped++;
    st =
        nb_cuda_check(cu, cudaMemcpyAsync(s->land, s->host, bytes, cudaMemcpyHostToDevice, x->copy),
                      "upload", "host-to-device copy (copy stream)");
    if (!st) st = nb_cuda_check(cu, cudaEventRecord(s->up, x->copy), "upload", "cudaEventRecord");
    if (!st)
      st = nb_cuda_check(cu, cudaStreamWaitEvent(cu->stream, s->up, 0), "upload",
                         "cudaStreamWaitEvent");
    if (!st)
      st = nb_cuda_check(cu,
                         cudaMemcpyAsync(dst, s->land, bytes, cudaMemcpyDeviceToDevice, cu->stream),
                         "upload", "device-to-device copy of the landed data");
  } else {
    st = nb_cuda_check(cu, cudaMemcpyAsync(dst, s->host, bytes, cudaMemcpyHostToDevice, cu->stream),
                       "upload", "host-to-device copy");
  }
  if (!st)
    st = nb_cuda_check(cu, cudaEventRecord(s->done, cu->stream), "upload", "cudaEventRecord");
  s->pending = true;
  if (st) {
    /* after a failure the slot may still be read, by either stream, and
     * `done` may be stale: wait for both before anyone reuses it */
    if (x->copy) cudaStreamSynchronize(x->copy);
    cudaStreamSynchronize(cu->stream);
    s->pending = false;
  }
  return st;
}

} // namespace

nb_status nb_cuda_transfer_new(nb_cuda *cu) {
  nb_cuda_transfer *x = new (std::nothrow) nb_cuda_transfer();
  if (!x) return nb_error(NB_ERR_OOM, "%s: out of host memory", cu->name);
  pthread_mutex_init(&x->lock, nullptr);
  cu->xfer = x;
  cudaError_t e = cudaSuccess;
  for (int i = 0; i < NB_CUDA_SLOTS && e == cudaSuccess; i++) {
    e = cudaEventCreateWithFlags(&x->s[i].up, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&x->s[i].done, cudaEventDisableTiming);
  }
  if (e == cudaSuccess) {
    /* without a copy stream every upload goes direct: slower, still right */
    if (cudaStreamCreateWithFlags(&x->copy, cudaStreamNonBlocking) != cudaSuccess) {
      cudaGetLastError();
      x->copy = nullptr;
    }
    return NB_OK;
  }
  return nb_cuda_check(cu, e, "transfer", "creating the staging events");
}

void nb_cuda_transfer_free(nb_cuda *cu) {
  nb_cuda_transfer *x = cu->xfer;
  if (!x) return;
  if (x->copy) cudaStreamSynchronize(x->copy);
  for (int i = 0; i < NB_CUDA_SLOTS; i++) {
    slot *s = &x->s[i];
    if (s->pending) cudaEventSynchronize(s->done);
    if (s->host) cudaFreeHost(s->host);
    if (s->land) cudaFree(s->land);
    if (s->up) cudaEventDestroy(s->up);
    if (s->done) cudaEventDestroy(s->done);
  }
  if (x->copy) cudaStreamDestroy(x->copy);
  pthread_mutex_destroy(&x->lock);
  delete x;
  cu->xfer = nullptr;
}

void nb_cuda_transfer_trim(nb_cuda *cu) {
  nb_cuda_transfer *x = cu->xfer;
  if (!x) return;
  pthread_mutex_lock(&x->lock);
  if (x->copy) cudaStreamSynchronize(x->copy);
  cudaStreamSynchronize(cu->stream);
  for (int i = 0; i < NB_CUDA_SLOTS; i++) {
    slot *s = &x->s[i];
    s->pending = false;
    if (s->land) cudaFree(s->land);
    s->land = nullptr;
    s->cap_land = 0;
  }
  pthread_mutex_unlock(&x->lock);
}

nb_status nb_cuda_upload(nb_cuda *cu, void *dst, const void *src, size_t bytes) {
  nb_cuda_transfer *x = cu->xfer;
  /* a copy recorded into a CUDA graph would read the staging slot again at
   * every replay, long after the slot holds other data */
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(cu->stream, &cs) == cudaSuccess && cs != cudaStreamCaptureStatusNone)
    return nb_error(NB_ERR_INTERNAL, "%s: upload while a CUDA graph is being recorded", cu->name);
  nb_status st = NB_OK;
  pthread_mutex_lock(&x->lock);
  for (size_t at = 0; at < bytes && !st; at += NB_CUDA_SLOT_MAX) {
    size_t n = bytes - at < NB_CUDA_SLOT_MAX ? bytes - at : NB_CUDA_SLOT_MAX;
    st = upload_piece(cu, static_cast<char *>(dst) + at, static_cast<const char *>(src) + at, n);
  }
  pthread_mutex_unlock(&x->lock);
  return st;
}

nb_status nb_cuda_download(nb_cuda *cu, void *dst, const void *src, size_t bytes) {
  nb_cuda_transfer *x = cu->xfer;
  nb_status st = NB_OK;
  pthread_mutex_lock(&x->lock);
  size_t at = 0;
  do {
    /* up to a ring's worth of pieces per stream sync */
    slot *used[NB_CUDA_SLOTS];
    size_t from[NB_CUDA_SLOTS], len[NB_CUDA_SLOTS];
    int k = 0;
    while (k < NB_CUDA_SLOTS && at < bytes && !st) {
      size_t n = bytes - at < NB_CUDA_SLOT_MAX ? bytes - at : NB_CUDA_SLOT_MAX;
      st = take_slot(cu, n, false, &used[k]);
      /* without pinned memory, straight into the caller's (pageable) dst */
      void *to = !st && used[k]->host ? used[k]->host : static_cast<char *>(dst) + at;
      if (!st)
        st = nb_cuda_check(cu,
                           cudaMemcpyAsync(to, static_cast<const char *>(src) + at, n,
                                           cudaMemcpyDeviceToHost, cu->stream),
                           "download", "device-to-host copy");
      if (st) break;
      from[k] = at;
      len[k++] = n;
      at += n;
    }
    /* the last sync also brings the fault record (cuda_backend.cu reads it) */
    if (!st && at >= bytes)
      st = nb_cuda_check(cu,
                         cudaMemcpyAsync(cu->fault, cu->fault_dev, sizeof *cu->fault,
                                         cudaMemcpyDeviceToHost, cu->stream),
                         "download", "reading the fault record");
    nb_status synced =
        nb_cuda_check(cu, cudaStreamSynchronize(cu->stream), "download", "stream sync");
    if (!st) st = synced;
    for (int i = 0; i < k && !st; i++)
      if (used[i]->host) memcpy(static_cast<char *>(dst) + from[i], used[i]->host, len[i]);
  } while (!st && at < bytes);
  pthread_mutex_unlock(&x->lock);
  return st;
}

void nb_cuda_transfer_stats(nb_cuda *cu, nb_memory_stats *out) {
  nb_cuda_transfer *x = cu->xfer;
  out->uploads = out->uploads_async = out->upload_waits = 0;
  out->staging = 0;
  if (!x) return;
  pthread_mutex_lock(&x->lock);
  out->uploads = x->uploads;
  out->uploads_async = x->overlapped;
  out->upload_waits = x->waits;
  for (int i = 0; i < NB_CUDA_SLOTS; i++) out->staging += x->s[i].cap + x->s[i].cap_land;
  pthread_mutex_unlock(&x->lock);
}
