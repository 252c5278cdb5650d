/* CUDA backend internals shared by the .cu files: the backend's state, the
 * kernel table (one entry per opcode, filled by each kernel family like the
 * CPU backend's), error helpers, and small device helpers (strided layouts,
 * warp reductions). C++ for nvcc only; the C side sees nb_cuda_has_kernel()
 * through backend_internal.h.
 *
 * Every kernel runs on the backend's one stream, so launches, cuBLAS and
 * cuDNN calls, transfers and allocator reuse are ordered without events.
 * Two exceptions, joined to it by events: NCCL's gradient reductions run
 * on a stream of their own (cuda_nccl.cu), and large uploads cross on a
 * copy stream into staging memory of their own before they land on this
 * one (cuda_transfer.cu). */
#ifndef NB_CUDA_INTERNAL_H
#define NB_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include <vector>

extern "C" {
#include "../backend_internal.h"
}

struct nb_cuda_allocator; /* cuda_alloc.cu */
struct nb_cuda_dnn;       /* cuda_conv.cu */
struct nb_cuda_nccl;      /* cuda_nccl.cu */
struct nb_cuda_transfer;  /* cuda_transfer.cu */
struct nb_cuda_lt;        /* cuda_matmul_lt.cu */

/* A run-time error found by a kernel (an index out of range). Kernels cannot
 * return a status, so the first one is recorded in device memory; every
 * download copies the record back in the same stream sync (32 bytes into
 * pinned memory) and reports it. */
struct nb_cuda_fault {
  int op; /* opcode + 1; 0 = no fault */
  int axis;
  long long value, position, limit;
};

struct nb_cuda {
  int device;
  const char *name; /* "cuda:0", the backend's name */
  cudaStream_t stream;
  int sm_count;
  size_t smem_optin; /* largest dynamic shared memory a block may opt into */
  nb_cuda_allocator *alloc;
  void *blas; /* cublasHandle_t, created on first use (cuda_matmul.cu) */
  nb_cuda_dnn *dnn;
  nb_cuda_fault *fault;     /* pinned host copy, filled by each download */
  nb_cuda_fault *fault_dev; /* the record kernels write (device memory) */
  int tf32;                 /* NABLA_TF32=1: TF32 tensor cores in cuBLAS/cuDNN */
  int sync_each;            /* NABLA_PROFILE set: wait for every launch, so that
                               plan.c's per-launch times are the kernels' */
  nb_cuda_nccl *nccl;       /* NCCL communicator and stream, made on first use */
  nb_cuda_transfer *xfer;   /* pinned staging ring and copy stream */
  int lt_on;                /* cuBLASLt bias/activation epilogues (NABLA_CUBLASLT=0: off) */
  nb_cuda_lt *lt;           /* cuBLASLt handle, workspace, cached algorithms (made on first use) */
};

/* ---- the kernel table ------------------------------------------------------------ */

typedef nb_status (*nb_cuda_run_fn)(nb_cuda *cu, const nb_kernel_call *c);

typedef struct nb_cuda_kernel_entry {
  nb_cuda_run_fn run;
  /* scratch bytes for a node; NULL = none */
  size_t (*workspace)(nb_cuda *cu, const nb_tensor *node);
  /* extra checks on a node of this op (dtypes, sizes); NULL = all run */
  nb_status (*check)(nb_cuda *cu, const nb_tensor *node);
  /* 1: an elementwise group may run on the output (cuda_backend.cu runs it
   * after the kernel, in place over call->out) */
  int epilogue;
  /* 1: `run` applies call->group itself (matmul: fused into one cuBLASLt
   * call, or nb_cuda_epilogue after the GEMM), so cuda_run does not */
  int runs_epilogue;
} nb_cuda_kernel_entry;

void nb_cuda_register_elementwise(nb_cuda_kernel_entry *t);
void nb_cuda_register_copy(nb_cuda_kernel_entry *t);
void nb_cuda_register_movement(nb_cuda_kernel_entry *t);
void nb_cuda_register_reduce(nb_cuda_kernel_entry *t);
void nb_cuda_register_matmul(nb_cuda_kernel_entry *t);
void nb_cuda_register_conv(nb_cuda_kernel_entry *t);
void nb_cuda_register_pool(nb_cuda_kernel_entry *t);
void nb_cuda_register_softmax(nb_cuda_kernel_entry *t);
void nb_cuda_register_attention(nb_cuda_kernel_entry *t);
void nb_cuda_register_decode(nb_cuda_kernel_entry *t);
void nb_cuda_register_nccl(nb_cuda_kernel_entry *t);

/* The table, built once (cuda_backend.cu). */
const nb_cuda_kernel_entry *nb_cuda_kernels(void);

/* Runs call->group over call->out in place after an opaque kernel wrote its
 * result there (cuda_elementwise.cu). */
nb_status nb_cuda_epilogue(nb_cuda *cu, const nb_kernel_call *c);

/* The vtable's graph hooks: record a plan run, replay it (cuda_graph.cu). */
nb_status nb_cuda_graph_begin(nb_backend *be);
nb_status nb_cuda_graph_end(nb_backend *be, void **out);
nb_status nb_cuda_graph_launch(nb_backend *be, void *graph);
void nb_cuda_graph_drop(nb_backend *be, void *graph);
/* The vtable's `count`: the plan's run counter + 1 on the stream. */
nb_status nb_cuda_count(nb_backend *be, uint64_t *counter);

/* Copies strided x (its data at src) densely into dst, converting to
 * dst_dt like nb_convert (cuda_copy.cu). */
nb_status nb_cuda_strided_copy(nb_cuda *cu, const nb_tensor *x, const void *src, void *dst,
                               nb_dtype dst_dt, const char *what);

/* ---- memory (cuda_alloc.cu) ----------------------------------------------------------- */

nb_status nb_cuda_allocator_new(nb_cuda *cu);
void nb_cuda_allocator_free(nb_cuda *cu);
/* Zeroed device memory of at least `bytes` (plans and states expect zeros,
 * like the CPU backend gives). */
nb_status nb_cuda_malloc(nb_cuda *cu, size_t bytes, void **out);
void nb_cuda_mfree(nb_cuda *cu, void *p);
nb_status nb_cuda_memory_stats(nb_cuda *cu, nb_memory_stats *out);

/* ---- transfers (cuda_transfer.cu) -------------------------------------------------- */

nb_status nb_cuda_transfer_new(nb_cuda *cu);
void nb_cuda_transfer_free(nb_cuda *cu);
/* Copies host src into device dst through pinned staging, ordered on the
 * stream after the launches before it; returns once src may be reused. */
nb_status nb_cuda_upload(nb_cuda *cu, void *dst, const void *src, size_t bytes);
/* Copies device src to host dst through pinned staging and waits for the
 * stream; the same sync copies the fault record into cu->fault. */
nb_status nb_cuda_download(nb_cuda *cu, void *dst, const void *src, size_t bytes);
/* Frees the device landing buffers (the allocator's out-of-memory retry);
 * later large uploads allocate them again, or go direct. */
void nb_cuda_transfer_trim(nb_cuda *cu);
/* Fills the transfer fields of *out (uploads, uploads_async, upload_waits,
 * staging). */
void nb_cuda_transfer_stats(nb_cuda *cu, nb_memory_stats *out);

/* ---- library handles ---------------------------------------------------------------- */

/* cuDNN state (cuda_conv.cu) and cuBLAS handle (cuda_matmul.cu), destroyed
 * with the backend. */
void nb_cuda_dnn_free(nb_cuda *cu);
void nb_cuda_blas_free(nb_cuda *cu);
/* The cuBLASLt handle, workspace and cached descriptors (cuda_matmul_lt.cu). */
void nb_cuda_lt_free(nb_cuda *cu);
/* The NCCL communicator, its stream and events (cuda_nccl.cu). */
void nb_cuda_nccl_free(nb_cuda *cu);

/* ---- per-shape caches (cuDNN convolutions, cuBLASLt matmuls) ---------------------- */

/* Keeps a freshly set-up cache entry: appends e to cache when its set-up
 * succeeded (st) and the append does, else destroys it; returns the error
 * if either failed. */
template <class T>
nb_status nb_cuda_cache_keep(nb_cuda *cu, std::vector<T *> &cache, T *e, nb_status st,
                             void (*destroy)(T *)) {
  if (!st) {
    try {
      cache.push_back(e);
    } catch (...) {
      st = nb_error(NB_ERR_OOM, "%s: out of host memory", cu->name);
    }
  }
  if (st) destroy(e);
  return st;
}

/* ---- errors ----------------------------------------------------------------------- */

/* NB_OK, or an error naming the device, the op and the CUDA error string. */
nb_status nb_cuda_check(nb_cuda *cu, cudaError_t e, const char *op, const char *what);
/* After a kernel launch: reports a bad launch configuration (or an earlier
 * asynchronous fault) for `op`. */
nb_status nb_cuda_launched(nb_cuda *cu, const char *op);
/* Name of a node's op, for messages. */
static inline const char *nb_cuda_op_name(const nb_tensor *node) {
  return nb_op_def_get(node->op)->name;
}

/* Records a bad index seen by a kernel (first one wins). */
__device__ inline void nb_cuda_report_fault(nb_cuda_fault *f, int op, long long value,
                                            long long position, long long limit, int axis) {
  if (atomicCAS(&f->op, 0, op + 1) == 0) {
    f->value = value;
    f->position = position;
    f->limit = limit;
    f->axis = axis;
  }
}

/* ---- launch geometry -------------------------------------------------------------- */

#define NB_CUDA_THREADS 256

/* Blocks for a grid-stride loop over n items: enough to fill the GPU, never
 * more than the items need. */
static inline unsigned nb_cuda_blocks(const nb_cuda *cu, int64_t n, int threads) {
  int64_t want = (n + threads - 1) / threads;
  int64_t cap = (int64_t)(cu->sm_count > 0 ? cu->sm_count : 32) * 32;
  if (want > cap) want = cap;
  return (unsigned)(want > 0 ? want : 1);
}

#define NB_CUDA_GRID_STRIDE(i, n)                                                                  \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
       i += (int64_t)gridDim.x * blockDim.x)

/* ---- strided layouts ------------------------------------------------------------- */

/* A tensor's element walk in row-major order of its shape, with adjacent
 * axes merged where memory allows (a contiguous tensor is one axis) and axes
 * of size 1 dropped, so that kernels spend few divisions per element. */
struct nb_cuda_layout {
  int ndim;
  int64_t shape[NB_MAX_DIMS];
  int64_t stride[NB_MAX_DIMS];
};

/* Layout of t's own shape and strides (elements, offset excluded). */
nb_cuda_layout nb_cuda_layout_of(const nb_tensor *t);
/* Layout of `ndim` axes given explicitly. */
nb_cuda_layout nb_cuda_layout_make(int ndim, const int64_t *shape, const int64_t *stride);

/* Element offset of linear index i. */
__host__ __device__ inline int64_t nb_cuda_offset(const nb_cuda_layout &l, int64_t i) {
  int64_t off = 0;
  for (int d = l.ndim - 1; d > 0; d--) {
    int64_t n = l.shape[d];
    off += (i % n) * l.stride[d];
    i /= n;
  }
  return l.ndim > 0 ? off + i * l.stride[0] : 0;
}

/* ---- warp and block reductions --------------------------------------------------- */

__device__ inline float nb_warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* max where a NaN wins, so a NaN poisons its row as on the CPU */
__device__ inline float nb_max_nan(float a, float b) { return (b > a || b != b) ? b : a; }
__device__ inline float nb_min_nan(float a, float b) { return (b < a || b != b) ? b : a; }

__device__ inline float nb_warp_max_nan(float v) {
  for (int o = 16; o > 0; o >>= 1) v = nb_max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Block-wide reduction of one float per thread (blockDim.x a multiple of 32,
 * at most 1024); every thread gets the result. `op` 0 = sum, 1 = max (NaN
 * wins), 2 = min (NaN wins). Uses 33 floats of shared memory. */
__device__ inline float nb_block_reduce(float v, int op) {
  __shared__ float part[33];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = op == 0 ? v + w : op == 1 ? nb_max_nan(v, w) : nb_min_nan(v, w);
  }
  __syncthreads(); /* part[] may still be read by a previous call */
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nw ? part[lane] : (op == 0 ? 0.0f : part[0]);
    for (int o = 16; o > 0; o >>= 1) {
      float w = __shfl_xor_sync(0xffffffffu, v, o);
      v = op == 0 ? v + w : op == 1 ? nb_max_nan(v, w) : nb_min_nan(v, w);
    }
    if (lane == 0) part[32] = v;
  }
  __syncthreads();
  return part[32];
}

#endif
