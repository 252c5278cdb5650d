/* The CUDA backend's caching allocator. cudaMalloc and cudaFree are slow
 * (cudaFree waits for the whole device), and nabla allocates in bursts: a
 * plan's arena, workspace, inputs and constants at compile time, freed
 * together when the plan goes (the evaluation plans of every epoch, the
 * plan cache of partial batches). Freed blocks are kept by size class and
 * handed out again; memory goes back to the device only when a cudaMalloc
 * fails (then everything cached is released and the call retried) or when
 * the backend is closed.
 *
 * Size classes: requests up to 1 MiB round up to 512 bytes, larger ones to
 * 2 MiB. A cached block is reused for a request of its class or one up to a
 * quarter smaller, so a slightly smaller arena can take a freed one.
 *
 * Reuse is safe without events because everything runs on the backend's
 * one stream: a kernel that still reads a freed block is ahead, on the same
 * stream, of the zeroing and the kernels of its next owner. */
#include <map>
#include <new>
#include <unordered_map>

#include "cuda_internal.h"

struct nb_cuda_allocator {
  std::unordered_map<void *, size_t> live; /* pointer -> block size */
  std::multimap<size_t, void *> cached;    /* free blocks by size */
  size_t in_use = 0, reserved = 0, peak = 0;
  uint64_t allocs = 0, reused = 0;
};

namespace {

const size_t SMALL = (size_t)1 << 20;
const size_t SMALL_ROUND = 512;
const size_t LARGE_ROUND = (size_t)2 << 20;

size_t size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  size_t r = bytes <= SMALL ? SMALL_ROUND : LARGE_ROUND;
  return (bytes + r - 1) / r * r;
}

/* Returns every cached block to the device. */
void release_cached(nb_cuda *cu) {
  nb_cuda_allocator *a = cu->alloc;
  if (a->cached.empty()) return;
  cudaStreamSynchronize(cu->stream);
  for (auto &b : a->cached) {
    cudaFree(b.second);
    a->reserved -= b.first;
  }
  a->cached.clear();
}

nb_status oom(nb_cuda *cu, size_t bytes, size_t want, cudaError_t e) {
  size_t free_b = 0, total_b = 0;
  cudaGetLastError();
  cudaMemGetInfo(&free_b, &total_b);
  nb_cuda_allocator *a = cu->alloc;
  return nb_error(NB_ERR_OOM,
                  "%s: out of device memory: cannot allocate %zu bytes (%zu with rounding); the "
                  "device has %zu of %zu bytes free, nabla holds %zu bytes (%zu in use): %s",
                  cu->name, bytes, want, free_b, total_b, a->reserved, a->in_use,
                  cudaGetErrorString(e));
}

} // namespace

nb_status nb_cuda_allocator_new(nb_cuda *cu) {
  cu->alloc = new (std::nothrow) nb_cuda_allocator();
  if (!cu->alloc) return nb_error(NB_ERR_OOM, "%s: out of host memory", cu->name);
  return NB_OK;
}

void nb_cuda_allocator_free(nb_cuda *cu) {
  nb_cuda_allocator *a = cu->alloc;
  if (!a) return;
  cudaStreamSynchronize(cu->stream);
  for (auto &b : a->cached) cudaFree(b.second);
  for (auto &b : a->live) cudaFree(b.first); /* blocks the caller never freed */
  delete a;
  cu->alloc = nullptr;
}

nb_status nb_cuda_malloc(nb_cuda *cu, size_t bytes, void **out) {
  nb_cuda_allocator *a = cu->alloc;
  *out = nullptr;
  size_t want = size_class(bytes);
  void *p = nullptr;
  size_t got = 0;
  try {
    auto it = a->cached.lower_bound(want);
    if (it != a->cached.end() && it->first - want <= want / 4) {
      p = it->second;
      got = it->first;
      a->cached.erase(it);
      a->reused++;
    } else {
      cudaError_t e = cudaMalloc(&p, want);
      if (e == cudaErrorMemoryAllocation) {
        /* give the cache and the upload landing buffers back to the
         * device and try once more */
        cudaGetLastError();
        release_cached(cu);
        nb_cuda_transfer_trim(cu);
        e = cudaMalloc(&p, want);
      }
      if (e != cudaSuccess) return oom(cu, bytes, want, e);
      got = want;
      a->reserved += got;
    }
    a->live.emplace(p, got);
  } catch (...) {
    /* only the bookkeeping can throw (std::bad_alloc); the block cannot
     * be tracked, so it goes back to the device */
    if (p) {
      cudaStreamSynchronize(cu->stream);
      cudaFree(p);
      a->reserved -= got;
    }
    return nb_error(NB_ERR_OOM, "%s: out of host memory in the allocator", cu->name);
  }
  a->allocs++;
  a->in_use += got;
  if (a->in_use > a->peak) a->peak = a->in_use;
  *out = p;
  /* zeroed like the CPU backend's memory; ordered after earlier users */
  return nb_cuda_check(cu, cudaMemsetAsync(p, 0, got, cu->stream), "alloc", "cudaMemsetAsync");
}

void nb_cuda_mfree(nb_cuda *cu, void *p) {
  nb_cuda_allocator *a = cu->alloc;
  auto it = a->live.find(p);
  if (it == a->live.end()) return; /* not ours: ignore rather than corrupt the cache */
  size_t size = it->second;
  a->live.erase(it);
  a->in_use -= size;
  try {
    a->cached.emplace(size, p);
  } catch (...) {
    /* no room to remember it: give it back to the device instead */
    cudaStreamSynchronize(cu->stream);
    cudaFree(p);
    a->reserved -= size;
  }
}

nb_status nb_cuda_memory_stats(nb_cuda *cu, nb_memory_stats *out) {
  nb_cuda_allocator *a = cu->alloc;
  out->in_use = a->in_use;
  out->reserved = a->reserved;
  out->peak = a->peak;
  out->allocs = a->allocs;
  out->reused = a->reused;
  size_t f = 0, t = 0;
  nb_status st = nb_cuda_check(cu, cudaMemGetInfo(&f, &t), "memory stats", "cudaMemGetInfo");
  out->dev_free = f;
  out->dev_total = t;
  nb_cuda_transfer_stats(cu, out);
  return st;
}
