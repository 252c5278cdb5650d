/* The CUDA backend: device open/close, transfers, and the dispatch of every
 * launch to the kernel of its opcode (the table is filled by the kernel
 * families in the other cuda_*.cu files, like the CPU backend's).
 *
 * Everything runs on one non-blocking stream per device: kernels, cuBLAS,
 * cuDNN, uploads and the allocator's zeroing (large uploads cross on a copy
 * stream first and land on this one: cuda_transfer.cu). Only a download
 * waits for the stream (an upload only when all its staging buffers are
 * still queued), and a download is where asynchronous failures
 * (a bad index found by a kernel, an illegal address) come back as a status.
 * Nothing here aborts. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

namespace {

nb_cuda_kernel_entry kernel_table[NB_OP_COUNT];
pthread_once_t table_once = PTHREAD_ONCE_INIT;

void build_table() {
  nb_cuda_register_elementwise(kernel_table);
  nb_cuda_register_copy(kernel_table);
  nb_cuda_register_movement(kernel_table);
  nb_cuda_register_reduce(kernel_table);
  nb_cuda_register_matmul(kernel_table);
  nb_cuda_register_conv(kernel_table);
  nb_cuda_register_pool(kernel_table);
  nb_cuda_register_softmax(kernel_table);
  nb_cuda_register_attention(kernel_table);
  nb_cuda_register_decode(kernel_table);
  nb_cuda_register_nccl(kernel_table);
}

nb_cuda *cu_of(nb_backend *be) { return static_cast<nb_cuda *>(be->impl); }

/* A fault recorded by a kernel since the last check (cu->fault was copied
 * back and the stream waited for), as a status; the record is cleared. */
nb_status take_fault(nb_cuda *cu) {
  nb_cuda_fault *f = cu->fault;
  if (!f->op) return NB_OK;
  nb_cuda_fault copy = *f;
  memset(f, 0, sizeof *f);
  nb_status st =
      nb_cuda_check(cu, cudaMemsetAsync(cu->fault_dev, 0, sizeof *cu->fault_dev, cu->stream),
                    "download", "clearing the fault record");
  if (st) return st;
  const char *op = nb_op_def_get((nb_opcode)(copy.op - 1))->name;
  if (copy.axis < 0)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: label %lld at position %lld is out of range [0, %lld) (found on %s by a "
                    "kernel of an earlier nb_plan_run; GPU kernels report at the next download)",
                    op, copy.value, copy.position, copy.limit, cu->name);
  return nb_error(NB_ERR_INVALID_ARG,
                  "%s: index %lld at position %lld is out of range [0, %lld) on axis %d (found on "
                  "%s by a kernel of an earlier nb_plan_run; GPU kernels report at the next "
                  "download)",
                  op, copy.value, copy.position, copy.limit, copy.axis, cu->name);
}

nb_status cuda_alloc(nb_backend *be, size_t bytes, void **out) {
  nb_cuda *cu = cu_of(be);
  cudaSetDevice(cu->device);
  return nb_cuda_malloc(cu, bytes, out);
}

void cuda_free(nb_backend *be, void *p) {
  if (!p) return;
  nb_cuda *cu = cu_of(be);
  cudaSetDevice(cu->device);
  nb_cuda_mfree(cu, p);
}

/* Ordered on the stream, so an input is not overwritten while the previous
 * run's kernels still read it; pinned and asynchronous (cuda_transfer.cu):
 * the caller may reuse its buffer at once. */
nb_status cuda_upload(nb_backend *be, void *dst, const void *src, size_t bytes) {
  if (!bytes) return NB_OK;
  nb_cuda *cu = cu_of(be);
  cudaSetDevice(cu->device);
  return nb_cuda_upload(cu, dst, src, bytes);
}

/* Waits for the stream: where asynchronous faults come back. */
nb_status cuda_download(nb_backend *be, void *dst, const void *src, size_t bytes) {
  nb_cuda *cu = cu_of(be);
  cudaSetDevice(cu->device);
  nb_status st = nb_cuda_download(cu, dst, src, bytes);
  if (!st) st = take_fault(cu);
  return st;
}

nb_status cuda_supports(nb_backend *be, const nb_tensor *node) {
  pthread_once(&table_once, build_table);
  const nb_cuda_kernel_entry *k = &kernel_table[node->op];
  if (!k->run)
    return nb_error(NB_ERR_UNSUPPORTED,
                    "%s has no kernel for op %s (run this graph on cpu; docs/cuda.md lists the "
                    "CUDA ops)",
                    be->name, nb_op_def_get(node->op)->name);
  /* nb_backend_supports_op probes with a bare node (no inputs) */
  if (k->check && node->in) return k->check(cu_of(be), node);
  return NB_OK;
}

size_t cuda_workspace(nb_backend *be, const nb_tensor *node) {
  pthread_once(&table_once, build_table);
  const nb_cuda_kernel_entry *k = &kernel_table[node->op];
  return k->workspace ? k->workspace(cu_of(be), node) : 0;
}

int cuda_fuses_epilogue(nb_backend *, const nb_tensor *node) {
  pthread_once(&table_once, build_table);
  return kernel_table[node->op].epilogue;
}

nb_status cuda_run(nb_backend *be, const nb_kernel_call *c) {
  pthread_once(&table_once, build_table);
  nb_cuda *cu = cu_of(be);
  const nb_cuda_kernel_entry *k = &kernel_table[c->node->op];
  if (!k->run) return cuda_supports(be, c->node);
  cudaSetDevice(cu->device);
  nb_status st = k->run(cu, c);
  /* an opaque kernel with an epilogue wrote its result into the group's
   * buffer; the group now runs over it in place (unless the kernel ran it
   * itself: matmul, cuda_matmul.cu) */
  if (!st && c->group && !k->runs_epilogue &&
      nb_op_def_get(c->node->op)->fusion != NB_FUSE_ELEMWISE)
    st = nb_cuda_epilogue(cu, c);
  if (!st && cu->sync_each)
    st = nb_cuda_check(cu, cudaStreamSynchronize(cu->stream), nb_op_def_get(c->node->op)->name,
                       "the kernel (NABLA_PROFILE waits for each launch)");
  return st;
}

nb_status cuda_memory_stats(nb_backend *be, nb_memory_stats *out) {
  nb_cuda *cu = cu_of(be);
  cudaSetDevice(cu->device);
  return nb_cuda_memory_stats(cu, out);
}

void cuda_destroy(nb_backend *be) {
  nb_cuda *cu = cu_of(be);
  if (cu) {
    cudaSetDevice(cu->device);
    cudaStreamSynchronize(cu->stream);
    nb_cuda_nccl_free(cu);
    nb_cuda_transfer_free(cu);
    nb_cuda_dnn_free(cu);
    nb_cuda_lt_free(cu);
    nb_cuda_blas_free(cu);
    nb_cuda_allocator_free(cu);
    if (cu->fault) cudaFreeHost(cu->fault);
    if (cu->fault_dev) cudaFree(cu->fault_dev);
    cudaStreamDestroy(cu->stream);
    free(cu);
  }
  free(be);
}

/* A multi-device plan runs this device's kernels on a thread of their own:
 * make the device current there (cuda_run sets it again per kernel). */
void cuda_bind_thread(nb_backend *be, int share) {
  (void)share;
  cudaSetDevice(cu_of(be)->device);
}

/* positional: nvcc's C++17 has no designated initializers; keep the order
 * of nb_backend_vtable */
const nb_backend_vtable cuda_vtable = {
    "cuda",              /* kind */
    cuda_alloc,          /* alloc */
    cuda_free,           /* free */
    cuda_upload,         /* upload */
    cuda_download,       /* download */
    cuda_supports,       /* supports */
    cuda_workspace,      /* workspace */
    cuda_fuses_epilogue, /* fuses_epilogue */
    cuda_run,            /* run */
    cuda_destroy,        /* destroy */
    cuda_memory_stats,   /* memory_stats */
    cuda_bind_thread,    /* bind_thread */
    /* graph_begin, graph_end, graph_launch, graph_drop (cuda_graph.cu) */
    nb_cuda_graph_begin,
    nb_cuda_graph_end,
    nb_cuda_graph_launch,
    nb_cuda_graph_drop,
    nb_cuda_count, /* count */
};

} // namespace

const nb_cuda_kernel_entry *nb_cuda_kernels(void) {
  pthread_once(&table_once, build_table);
  return kernel_table;
}

extern "C" int nb_cuda_has_kernel(nb_opcode op) {
  if ((int)op < 0 || op >= NB_OP_COUNT) return 0;
  return nb_cuda_kernels()[op].run != nullptr;
}

nb_status nb_cuda_check(nb_cuda *cu, cudaError_t e, const char *op, const char *what) {
  if (e == cudaSuccess) return NB_OK;
  cudaGetLastError(); /* clear a non-sticky error so later calls can work */
  return nb_error(e == cudaErrorMemoryAllocation ? NB_ERR_OOM : NB_ERR_INTERNAL,
                  "%s: %s: %s failed: %s (%s)", cu->name, op, what, cudaGetErrorString(e),
                  cudaGetErrorName(e));
}

nb_status nb_cuda_launched(nb_cuda *cu, const char *op) {
  return nb_cuda_check(cu, cudaGetLastError(), op, "kernel launch");
}

nb_cuda_layout nb_cuda_layout_make(int ndim, const int64_t *shape, const int64_t *stride) {
  nb_cuda_layout l;
  memset(&l, 0, sizeof l);
  /* merge from the innermost axis outwards; stored innermost first */
  int64_t sh[NB_MAX_DIMS], st[NB_MAX_DIMS];
  int c = -1;
  for (int d = ndim - 1; d >= 0; d--) {
    if (shape[d] == 1) continue;
    if (c >= 0 && stride[d] == st[c] * sh[c]) {
      sh[c] *= shape[d];
      continue;
    }
    c++;
    sh[c] = shape[d];
    st[c] = stride[d];
  }
  l.ndim = c + 1;
  for (int k = 0; k <= c; k++) {
    l.shape[k] = sh[c - k];
    l.stride[k] = st[c - k];
  }
  return l;
}

nb_cuda_layout nb_cuda_layout_of(const nb_tensor *t) {
  return nb_cuda_layout_make(t->ndim, t->shape, t->stride);
}

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
  nb_cuda *cu = static_cast<nb_cuda *>(calloc(1, sizeof *cu));
  if (!be || !cu) {
    free(be);
    free(cu);
    return nb_error(NB_ERR_OOM, "cuda:%d: out of host memory", index);
  }
  snprintf(be->name, sizeof be->name, "cuda:%d", index);
  be->vt = &cuda_vtable;
  be->index = index;
  be->impl = cu;
  cu->device = index;
  cu->name = be->name;
  const char *tf32 = getenv("NABLA_TF32"), *prof = getenv("NABLA_PROFILE");
  cu->tf32 = tf32 && !strcmp(tf32, "1");
  const char *lt = getenv("NABLA_CUBLASLT"); /* cuda_matmul_lt.cu; read once, here */
  cu->lt_on = !(lt && !strcmp(lt, "0"));
  cu->sync_each = prof && *prof && strcmp(prof, "0") != 0;
  e = cudaSetDevice(index);
  cudaDeviceProp prop;
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, index);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess)
    e = cudaHostAlloc(reinterpret_cast<void **>(&cu->fault), sizeof *cu->fault,
                      cudaHostAllocDefault);
  if (e == cudaSuccess)
    e = cudaMalloc(reinterpret_cast<void **>(&cu->fault_dev), sizeof *cu->fault_dev);
  if (e == cudaSuccess) e = cudaMemsetAsync(cu->fault_dev, 0, sizeof *cu->fault_dev, cu->stream);
  if (e != cudaSuccess) {
    nb_status st = nb_error(NB_ERR_INTERNAL, "cuda:%d: cannot initialise the device: %s", index,
                            cudaGetErrorString(e));
    cuda_destroy(be);
    return st;
  }
  memset(cu->fault, 0, sizeof *cu->fault);
  cu->sm_count = prop.multiProcessorCount;
  cu->smem_optin = prop.sharedMemPerBlockOptin;
  nb_status st = nb_cuda_allocator_new(cu);
  if (!st) st = nb_cuda_transfer_new(cu);
  if (st) {
    cuda_destroy(be);
    return st;
  }
  *out = be;
  return NB_OK;
}
