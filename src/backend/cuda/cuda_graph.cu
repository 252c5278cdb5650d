/* CUDA graphs: the backend's graph hooks (backend_internal.h), with which
 * plan.c records one run of a plan and replays it with one cudaGraphLaunch
 * (a training step of ~80 kernels otherwise pays a launch each).
 *
 * Recording is stream capture on the backend's one stream in thread-local
 * mode: the kernels, cuBLAS and cuDNN calls and cudaMemsetAsync that
 * cuda_run issues are recorded, not run. A call that cannot be recorded (a
 * stream sync, a cudaMalloc, cudnnFind*) fails in the calling thread and
 * invalidates the capture; graph_end then reports it, having cleared the
 * error, and plan.c launches that plan one by one from then on.
 *
 * Dropout reads the plan's run counter from device memory, which the
 * recording's last kernel (nb_cuda_count) advances, so a replay draws the
 * mask of the run it is.
 *
 * NABLA_CUDA_GRAPHS=0 switches recording off (read when a plan records, at
 * its 2nd run), to compare or bisect. */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

namespace {

__global__ void count_kernel(uint64_t *counter) { *counter += 1; }

nb_cuda *cuda_of(nb_backend *be) { return static_cast<nb_cuda *>(be->impl); }

bool graphs_off() {
  const char *e = getenv("NABLA_CUDA_GRAPHS");
  return e && !strcmp(e, "0");
}

} // namespace

nb_status nb_cuda_graph_begin(nb_backend *be) {
  nb_cuda *cu = cuda_of(be);
  if (graphs_off())
    return nb_error(NB_ERR_UNSUPPORTED, "%s: CUDA graphs are switched off (NABLA_CUDA_GRAPHS=0)",
                    cu->name);
  if (cu->sync_each) /* a stream sync after each launch cannot be recorded */
    return nb_error(NB_ERR_UNSUPPORTED, "%s: NABLA_PROFILE waits for each launch", cu->name);
  cudaSetDevice(cu->device);
  return nb_cuda_check(cu, cudaStreamBeginCapture(cu->stream, cudaStreamCaptureModeThreadLocal),
                       "graph", "cudaStreamBeginCapture");
}

nb_status nb_cuda_graph_end(nb_backend *be, void **out) {
  nb_cuda *cu = cuda_of(be);
  *out = nullptr;
  cudaSetDevice(cu->device);
  cudaGraph_t g = nullptr;
  /* ends the capture even when it was invalidated (g is then NULL) */
  nb_status st = nb_cuda_check(cu, cudaStreamEndCapture(cu->stream, &g), "graph",
                               "recording the launches (cudaStreamEndCapture)");
  if (!st && !g)
    st = nb_error(NB_ERR_INTERNAL, "%s: graph: the recording came back empty", cu->name);
  cudaGraphExec_t x = nullptr;
  if (!st)
    st = nb_cuda_check(cu, cudaGraphInstantiateWithFlags(&x, g, 0), "graph",
                       "cudaGraphInstantiateWithFlags");
  if (g) cudaGraphDestroy(g); /* the executable graph is a copy */
  /* the stream must be usable as before: a capture still open here (it
   * cannot be, after cudaStreamEndCapture) would swallow every later launch */
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(cu->stream, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) {
    cudaStreamEndCapture(cu->stream, &g);
    if (g) cudaGraphDestroy(g);
    if (!st) st = nb_error(NB_ERR_INTERNAL, "%s: graph: the stream was still recording", cu->name);
  }
  cudaGetLastError(); /* a failed capture leaves no error behind for later launches */
  if (st) {
    if (x) cudaGraphExecDestroy(x);
    return st;
  }
  *out = x;
  return NB_OK;
}

nb_status nb_cuda_graph_launch(nb_backend *be, void *graph) {
  nb_cuda *cu = cuda_of(be);
  cudaSetDevice(cu->device);
  return nb_cuda_check(cu, cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), cu->stream),
                       "graph", "cudaGraphLaunch");
}

void nb_cuda_graph_drop(nb_backend *be, void *graph) {
  if (!graph) return;
  cudaSetDevice(cuda_of(be)->device);
  /* a launch still in flight completes first; the graph is freed after */
  cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
}

/* One thread adds 1 on the stream, after the run's kernels: recorded, it
 * advances the counter at every replay without the host. */
nb_status nb_cuda_count(nb_backend *be, uint64_t *counter) {
  nb_cuda *cu = cuda_of(be);
  cudaSetDevice(cu->device);
  count_kernel<<<1, 1, 0, cu->stream>>>(counter);
  return nb_cuda_launched(cu, "run counter");
}
