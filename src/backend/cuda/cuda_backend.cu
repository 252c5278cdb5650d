/* The CUDA backend: device memory, transfers and (op by op, as they land)
 * kernels behind the same function table as the CPU backend.
 *
 * Status: devices open, memory and transfers work; no op has a CUDA kernel
 * yet, so nb_compile on a cuda backend reports the first op it cannot run.
 * Every CUDA failure comes back as an nb_status with the CUDA error string;
 * nothing here aborts. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../backend_internal.h"
}

namespace {

struct cuda_impl {
  int device;
  cudaStream_t stream;
};

nb_status cuda_fail(cudaError_t e, const char *what, const nb_backend *be) {
  return nb_error(e == cudaErrorMemoryAllocation ? NB_ERR_OOM : NB_ERR_INTERNAL,
                  "%s: %s failed: %s", be ? be->name : "cuda", what, cudaGetErrorString(e));
}

cuda_impl *impl_of(nb_backend *be) { return static_cast<cuda_impl *>(be->impl); }

nb_status cuda_alloc(nb_backend *be, size_t bytes, void **out) {
  cudaSetDevice(impl_of(be)->device);
  size_t n = bytes ? bytes : 256;
  cudaError_t e = cudaMalloc(out, n);
  if (e != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    *out = NULL;
    return nb_error(NB_ERR_OOM, "%s: cannot allocate %zu bytes (%zu of %zu bytes free): %s",
                    be->name, bytes, free_b, total_b, cudaGetErrorString(e));
  }
  /* plans and states expect zeroed memory, like the CPU backend gives */
  e = cudaMemset(*out, 0, n);
  return e == cudaSuccess ? NB_OK : cuda_fail(e, "cudaMemset", be);
}

void cuda_free(nb_backend *be, void *p) {
  if (!p) return;
  cudaSetDevice(impl_of(be)->device);
  cudaFree(p);
}

nb_status cuda_upload(nb_backend *be, void *dst, const void *src, size_t bytes) {
  if (!bytes) return NB_OK;
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  return e == cudaSuccess ? NB_OK : cuda_fail(e, "host-to-device copy", be);
}

nb_status cuda_download(nb_backend *be, void *dst, const void *src, size_t bytes) {
  if (!bytes) return NB_OK;
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  return e == cudaSuccess ? NB_OK : cuda_fail(e, "device-to-host copy", be);
}

nb_status cuda_supports(nb_backend *be, const nb_tensor *node) {
  return nb_error(NB_ERR_UNSUPPORTED, "%s has no kernel for op %s yet (run it on cpu)", be->name,
                  nb_op_def_get(node->op)->name);
}

size_t cuda_workspace(nb_backend *, const nb_tensor *) { return 0; }

nb_status cuda_run(nb_backend *be, const nb_kernel_call *c) {
  return cuda_supports(be, c->node);
}

void cuda_destroy(nb_backend *be) {
  cuda_impl *im = impl_of(be);
  if (im) {
    cudaSetDevice(im->device);
    cudaStreamDestroy(im->stream);
    free(im);
  }
  free(be);
}

/* positional: nvcc's C++17 has no designated initializers; keep the order
 * of nb_backend_vtable */
const nb_backend_vtable cuda_vtable = {
    "cuda",         /* kind */
    cuda_alloc,     /* alloc */
    cuda_free,      /* free */
    cuda_upload,    /* upload */
    cuda_download,  /* download */
    cuda_supports,  /* supports */
    cuda_workspace, /* workspace */
    nullptr,        /* fuses_epilogue: no fused epilogues yet */
    cuda_run,       /* run */
    cuda_destroy,   /* destroy */
};

} // namespace

extern "C" nb_status nb_cuda_backend_open(int index, nb_backend **out) {
  *out = NULL;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0)
    return nb_error(NB_ERR_UNSUPPORTED, "device 'cuda:%d': no CUDA GPU is available (%s)", index,
                    e != cudaSuccess ? cudaGetErrorString(e) : "no devices found");
  if (index >= count)
    return nb_error(NB_ERR_INVALID_ARG, "cuda:%d: only %d CUDA GPU%s (cuda:0..cuda:%d)", index,
                    count, count == 1 ? "" : "s", count - 1);
  nb_backend *be = static_cast<nb_backend *>(calloc(1, sizeof *be));
  cuda_impl *im = static_cast<cuda_impl *>(calloc(1, sizeof *im));
  if (!be || !im) {
    free(be);
    free(im);
    return nb_error(NB_ERR_OOM, "cuda:%d: out of host memory", index);
  }
  im->device = index;
  e = cudaSetDevice(index);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    free(be);
    free(im);
    return nb_error(NB_ERR_INTERNAL, "cuda:%d: cannot initialise the device: %s", index,
                    cudaGetErrorString(e));
  }
  be->vt = &cuda_vtable;
  be->index = index;
  be->impl = im;
  snprintf(be->name, sizeof be->name, "cuda:%d", index);
  *out = be;
  return NB_OK;
}
