/* The gradient allreduce ops (src/graph/ops_dist.c) on the GPU, through
 * NCCL: the bucket never leaves the device (NCCL reads and writes device
 * memory, over NVLink, PCIe or the network as it finds them), so no
 * gradient is copied to the host.
 *
 * - allreduce_start packs the bucket's gradients into its output with
 *   device-to-device copies on the compute stream, then starts an in-place
 *   ncclAllReduce (sum) on a communication stream of its own, ordered after
 *   the packing by an event. The compute stream goes on with backward.
 * - allreduce_wait makes the compute stream wait for that reduction (an
 *   event recorded after it on the communication stream; the host does not
 *   wait) and scales the sum by 1 / ranks into its output, like the CPU
 *   kernel: the same fp[0], the same arithmetic. ncclAvg (NCCL 2.10+) would
 *   save that kernel but not a pass over memory, since the wait writes its
 *   own buffer anyway.
 *
 * The NCCL communicator is made on the first start a backend runs, from
 * the node's communicator table (src/core/collective.h, filled by src/dist:
 * its rank and size): rank 0 draws the unique id (ncclGetUniqueId), the
 * table's broadcast sends it to the others over MPI,
 * and every rank joins with ncclCommInitRank on this backend's device.
 * With one rank (no MPI, NB_DIST_SELF) there is nothing to send. The
 * communicator lives with the backend (cuda_destroy frees it) and is reused
 * by every plan of the same rank and size.
 *
 * NCCL itself is loaded at run time (src/dist/nccl_api.h): a CUDA build has
 * no NCCL dependency, and compiling a plan with these ops on a machine
 * without NCCL fails with a message that says how to install or point at it. */
#include <stdlib.h>
#include <string.h>

#include "../../dist/nccl_api.h"
#include "../../core/collective.h"
#include "cuda_internal.h"

struct nb_cuda_nccl {
  const nb_nccl_api *api;
  nb_nccl_comm comm;
  int rank, size;      /* the communicator's */
  int failed;          /* an NCCL call failed: the communicator is aborted, not destroyed */
  cudaStream_t stream; /* the communication stream */
  cudaEvent_t ready;   /* recorded on the compute stream after a bucket is packed */
  /* reductions started and not yet waited for: the bucket and the event
   * recorded after its ncclAllReduce */
  struct pending_op {
    void *buf;
    cudaEvent_t done;
  } * pending;
  int n_pending, cap_pending;
  cudaEvent_t *spare; /* events of waited reductions, for reuse */
  int n_spare, cap_spare;
};

namespace {

/* ---- the communicator --------------------------------------------------------- */

nb_status cuda_fail(nb_cuda *cu, cudaError_t e, const char *what) {
  return nb_cuda_check(cu, e, "allreduce", what);
}

/* The backend's NCCL state, made on first use: the library, the stream
 * and the packing event. */
nb_status nccl_state(nb_cuda *cu, nb_cuda_nccl **out) {
  if (cu->nccl) {
    *out = cu->nccl;
    return NB_OK;
  }
  const nb_nccl_api *api = nullptr;
  nb_status st = nb_nccl_get(&api);
  if (st) return st;
  nb_cuda_nccl *s = static_cast<nb_cuda_nccl *>(calloc(1, sizeof *s));
  if (!s) return nb_error(NB_ERR_OOM, "%s: allreduce: out of host memory", cu->name);
  s->api = api;
  /* the highest priority, so that NCCL's kernels get SMs while backward's
   * kernels fill the GPU, and the reduction overlaps instead of queueing */
  int lo = 0, hi = 0;
  cudaError_t e = cudaDeviceGetStreamPriorityRange(&lo, &hi);
  if (e == cudaSuccess) e = cudaStreamCreateWithPriority(&s->stream, cudaStreamNonBlocking, hi);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming);
  if (e != cudaSuccess) {
    st = cuda_fail(cu, e, "creating the communication stream");
    if (s->stream) cudaStreamDestroy(s->stream);
    free(s);
    return st;
  }
  cu->nccl = s;
  *out = s;
  return NB_OK;
}

void comm_free(nb_cuda_nccl *s) {
  if (!s->comm) return;
  /* a broken communicator can hang in ncclCommDestroy; abort it instead */
  if (s->failed)
    s->api->comm_abort(s->comm);
  else
    s->api->comm_destroy(s->comm);
  s->comm = nullptr;
}

/* The communicator of c's ranks on this device, made on first use. Every
 * rank gets here at the same point of the same plan, which is what the
 * broadcast and ncclCommInitRank (both collective) need. */
nb_status nccl_comm(nb_cuda *cu, nb_cuda_nccl *s, const nb_collective *c) {
  int rank = c->rank, size = c->size;
  if (s->comm && s->rank == rank && s->size == size) return NB_OK;
  if (s->comm) {
    cudaStreamSynchronize(s->stream);
    comm_free(s);
  }
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(cu->stream, &cs) == cudaSuccess && cs != cudaStreamCaptureStatusNone)
    return nb_error(NB_ERR_STATE,
                    "%s: allreduce: the NCCL communicator is made on the first run of a plan, "
                    "which cannot be recorded as a CUDA graph: run the plan once before recording",
                    cu->name);
  const nb_nccl_api *api = s->api;
  nb_nccl_unique_id id;
  memset(&id, 0, sizeof id);
  nb_status st = NB_OK;
  if (rank == 0) {
    nb_nccl_result rc = api->get_unique_id(&id);
    if (rc != NB_NCCL_SUCCESS)
      st = nb_nccl_error(api, rc, nullptr, "%s: ncclGetUniqueId", cu->name);
  }
  /* rank 0 failing alone must not leave the others waiting for its id */
  st = c->agree(c->ctx, st);
  if (!st) st = c->broadcast(c->ctx, &id, sizeof id, 0);
  if (st) return nb_error(st, "%s: setting up NCCL: %s", cu->name, nb_last_error());
  nb_nccl_comm comm = nullptr;
  nb_nccl_result rc = api->comm_init_rank(&comm, size, id, rank);
  if (rc != NB_NCCL_SUCCESS) {
    /* on a half-made communicator, only abort is safe */
    if (comm) api->comm_abort(comm);
    char v[32];
    nb_nccl_version_string(api->version, v, sizeof v);
    return nb_nccl_error(api, rc, nullptr,
                         "%s: ncclCommInitRank (rank %d of %d, NCCL %s from %s; each rank needs "
                         "a GPU of its own: --device cuda takes cuda:<local rank>)",
                         cu->name, rank, size, v, api->path);
  }
  s->comm = comm;
  s->rank = rank;
  s->size = size;
  s->failed = 0;
  return NB_OK;
}

int find_pending(const nb_cuda_nccl *s, const void *buf) {
  for (int i = 0; i < s->n_pending; i++)
    if (s->pending[i].buf == buf) return i;
  return -1;
}

/* Takes pending entry i off the list; its event goes back to the spares. */
void retire(nb_cuda_nccl *s, int i) {
  s->spare[s->n_spare++] = s->pending[i].done;
  s->pending[i] = s->pending[--s->n_pending];
}

/* Room for one more pending reduction and its event (the spares list can
 * then take every pending event back). */
nb_status reserve(nb_cuda *cu, nb_cuda_nccl *s) {
  if (s->n_pending == s->cap_pending) {
    int cap = s->cap_pending ? 2 * s->cap_pending : 16;
    void *p = realloc(s->pending, (size_t)cap * sizeof *s->pending);
    void *q = p ? realloc(s->spare, (size_t)cap * sizeof *s->spare) : nullptr;
    if (p) s->pending = static_cast<nb_cuda_nccl::pending_op *>(p);
    if (q) s->spare = static_cast<cudaEvent_t *>(q);
    if (!p || !q) return nb_error(NB_ERR_OOM, "%s: allreduce: out of host memory", cu->name);
    s->cap_pending = s->cap_spare = cap;
  }
  return NB_OK;
}

/* ---- kernels -------------------------------------------------------------------- */

__global__ void scale_kernel(float *out, const float *in, float scale, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) out[i] = in[i] * scale;
}

/* At compile time: NCCL must load here, so that a machine without it fails
 * before training with a message saying what to install. */
nb_status check_start(nb_cuda *cu, const nb_tensor *node) {
  if (!node->data)
    return nb_error(NB_ERR_INVALID_ARG, "%s: allreduce_start without a communicator", cu->name);
  const nb_nccl_api *api = nullptr;
  return nb_nccl_get(&api);
}

nb_status run_start(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *t = c->node;
  const nb_collective *coll = static_cast<const nb_collective *>(t->data);
  float *out = static_cast<float *>(c->out);
  nb_cuda_nccl *s = nullptr;
  nb_status st = nccl_state(cu, &s);
  if (!st) st = nccl_comm(cu, s, coll);
  if (!st) st = reserve(cu, s);
  if (st) return st;
  /* A reduction left pending on this bucket by an earlier run that failed
   * before its wait: order the packing after it, so NCCL is done with the
   * buffer before it is overwritten. */
  int old = find_pending(s, out);
  if (old >= 0) {
    st = cuda_fail(cu, cudaStreamWaitEvent(cu->stream, s->pending[old].done, 0),
                   "waiting for an earlier reduction of the bucket");
    if (st) return st;
    retire(s, old);
  }
  /* the constructor made every input dense: the bucket is their bytes in turn */
  int64_t count = 0;
  for (int i = 0; i < c->n_in; i++) {
    int64_t n = nb_tensor_numel(t->in[i]);
    if (n)
      st = cuda_fail(cu,
                     cudaMemcpyAsync(out + count, c->in[i], (size_t)n * sizeof(float),
                                     cudaMemcpyDeviceToDevice, cu->stream),
                     "packing the bucket");
    if (st) return st;
    count += n;
  }
  cudaEvent_t done = nullptr;
  if (s->n_spare)
    done = s->spare[--s->n_spare];
  else
    st =
        cuda_fail(cu, cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "creating an event");
  if (!st) st = cuda_fail(cu, cudaEventRecord(s->ready, cu->stream), "recording the packing");
  if (!st)
    st = cuda_fail(cu, cudaStreamWaitEvent(s->stream, s->ready, 0), "ordering the reduction");
  if (st) {
    if (done) s->spare[s->n_spare++] = done;
    return st;
  }
  nb_nccl_result rc =
      s->api->all_reduce(out, out, (size_t)count, NB_NCCL_FLOAT32, NB_NCCL_SUM, s->comm, s->stream);
  if (rc != NB_NCCL_SUCCESS) {
    s->failed = 1;
    s->spare[s->n_spare++] = done;
    return nb_nccl_error(s->api, rc, s->comm,
                         "%s: ncclAllReduce of a bucket of %d gradients (%lld floats, rank %d of "
                         "%d)",
                         cu->name, c->n_in, (long long)count, s->rank, s->size);
  }
  st = cuda_fail(cu, cudaEventRecord(done, s->stream), "recording the reduction");
  if (st) {
    s->spare[s->n_spare++] = done;
    return st;
  }
  s->pending[s->n_pending].buf = out;
  s->pending[s->n_pending].done = done;
  s->n_pending++;
  return NB_OK;
}

nb_status run_wait(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *t = c->node;
  nb_cuda_nccl *s = cu->nccl;
  const float *sum = static_cast<const float *>(c->in[0]);
  int i = s ? find_pending(s, sum) : -1;
  if (i < 0)
    return nb_error(NB_ERR_STATE, "%s: allreduce_wait: no reduction was started on this bucket",
                    cu->name);
  nb_status st = cuda_fail(cu, cudaStreamWaitEvent(cu->stream, s->pending[i].done, 0),
                           "waiting for the reduction");
  if (st) return st;
  retire(s, i);
  /* a peer that failed or vanished shows up here (host-side flag, no sync) */
  nb_nccl_result async = NB_NCCL_SUCCESS;
  nb_nccl_result rc = s->api->comm_get_async_error(s->comm, &async);
  if (rc == NB_NCCL_SUCCESS) rc = async;
  if (rc != NB_NCCL_SUCCESS) {
    s->failed = 1;
    const nb_tensor *start = t->in[0];
    return nb_nccl_error(s->api, rc, s->comm,
                         "%s: the reduction of a bucket of %d gradients (%lld floats, rank %d of "
                         "%d)",
                         cu->name, start->n_in, (long long)nb_tensor_numel(start), s->rank,
                         s->size);
  }
  int64_t n = nb_tensor_numel(t);
  if (!n) return NB_OK;
  scale_kernel<<<nb_cuda_blocks(cu, n, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(
      static_cast<float *>(c->out), sum, t->fp[0], n);
  return nb_cuda_launched(cu, "allreduce_wait");
}

} // namespace

void nb_cuda_register_nccl(nb_cuda_kernel_entry *t) {
  t[NB_OP_ALLREDUCE_START].run = run_start;
  t[NB_OP_ALLREDUCE_START].check = check_start;
  t[NB_OP_ALLREDUCE_WAIT].run = run_wait;
}

void nb_cuda_nccl_free(nb_cuda *cu) {
  nb_cuda_nccl *s = cu->nccl;
  if (!s) return;
  /* NCCL may still be reading a bucket of a failed run */
  cudaStreamSynchronize(s->stream);
  for (int i = 0; i < s->n_pending; i++) cudaEventDestroy(s->pending[i].done);
  for (int i = 0; i < s->n_spare; i++) cudaEventDestroy(s->spare[i]);
  comm_free(s);
  cudaEventDestroy(s->ready);
  cudaStreamDestroy(s->stream);
  free(s->pending);
  free(s->spare);
  free(s);
  cu->nccl = nullptr;
}
