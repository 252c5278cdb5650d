/* The backend interface: a small table of functions that every device
 * (CPU, CUDA) implements. The compiler talks to devices only through it. */
#ifndef NB_BACKEND_INTERNAL_H
#define NB_BACKEND_INTERNAL_H

#include "../graph/graph_internal.h"
#include "nabla/backend.h"

/* One op of a fused elementwise group. src[k] >= 0 names external input
 * src[k]; src[k] < 0 names the result of op -(src[k] + 1) of the group. */
typedef struct nb_fused_op {
  nb_opcode op;
  int n_src;
  int src[3];
  int64_t ip0;
  float fp[NB_OP_FPARAMS];
} nb_fused_op;

/* A chain of elementwise ops that all produce the shape of the last one;
 * only the last result is written to memory. */
typedef struct nb_fused_group {
  int n_ops;
  nb_fused_op *ops;
  int n_ext;
  const nb_tensor **ext; /* layout (shape, strides) of each external input */
} nb_fused_group;

/* Everything a kernel needs for one launch. `in[i]` points at input i's
 * first element (its view offset already applied); inputs may be strided
 * views: read node->in[i]->shape/stride. `out` is dense row-major. */
typedef struct nb_kernel_call {
  const nb_tensor *node;
  void *out;
  void *const *in;
  int n_in;
  void *workspace;
  size_t workspace_bytes;
  uint64_t step; /* plan run counter, for dropout */
  /* Backends with `count`: the address, in the backend's memory, of the
   * plan's run counter, which kernels read instead of `step` so that a
   * recorded run draws new masks when replayed. NULL = read `step`. */
  const uint64_t *step_at;
  const nb_fused_group *group; /* elementwise nodes: the group ending here;
                                  opaque nodes: an epilogue (fuses_epilogue) */
} nb_kernel_call;

typedef struct nb_backend_vtable {
  const char *kind;
  nb_status (*alloc)(nb_backend *be, size_t bytes, void **out);
  void (*free)(nb_backend *be, void *p);
  nb_status (*upload)(nb_backend *be, void *dst, const void *src, size_t bytes);
  nb_status (*download)(nb_backend *be, void *dst, const void *src, size_t bytes);
  /* NB_OK if the backend can run this node; otherwise an error naming why. */
  nb_status (*supports)(nb_backend *be, const nb_tensor *node);
  /* Scratch bytes a node's kernel needs (0 if none). */
  size_t (*workspace)(nb_backend *be, const nb_tensor *node);
  /* Optional (NULL = never): 1 if the kernel of this opaque node can run an
   * elementwise group on its output (an epilogue). It is then called with
   * call.group set, call.in holding node's inputs followed by the group's
   * external inputs (the one that is node itself has no pointer), and
   * call.out pointing at the group's result, which it writes. */
  int (*fuses_epilogue)(nb_backend *be, const nb_tensor *node);
  nb_status (*run)(nb_backend *be, const nb_kernel_call *call);
  void (*destroy)(nb_backend *be);
  /* Optional (NULL = NB_ERR_UNSUPPORTED): the allocator's statistics. */
  nb_status (*memory_stats)(nb_backend *be, nb_memory_stats *out);
  /* Optional (NULL = nothing to do): prepares the calling thread, which a
   * multi-device plan dedicates to this device, to run its kernels: the
   * device's thread count (be->threads, or `share` when that is 0) and its
   * cores (be->cpu_first, be->cpu_count). */
  void (*bind_thread)(nb_backend *be, int share);
  /* Optional (all four NULL = none): recorded runs (CUDA graphs), used by
   * plan.c to replay a whole plan run with one launch. graph_begin starts
   * recording what the calling thread launches on the device: from then on
   * `run` records its kernels instead of running them, so every pointer and
   * by-value argument is frozen into the recording. NB_ERR_UNSUPPORTED when
   * recording is switched off (NABLA_CUDA_GRAPHS=0). graph_end always stops
   * the recording; it returns a runnable recording in *out, or an error when
   * recording failed (an unsupported call, a launch error); the device's
   * error state is then cleared and nothing recorded has run. graph_launch
   * runs a recording once, ordered with uploads and downloads like a launch.
   * graph_drop frees it (a launch still running finishes first). */
  nb_status (*graph_begin)(nb_backend *be);
  nb_status (*graph_end)(nb_backend *be, void **out);
  nb_status (*graph_launch)(nb_backend *be, void *graph);
  void (*graph_drop)(nb_backend *be, void *graph);
  /* Optional (NULL = kernels get the run counter by value, and a plan with
   * dropout is never recorded): adds 1 to the uint64 run counter at
   * `counter` (8 bytes of this backend's memory), ordered after the
   * launches before it, and recorded like a launch between graph_begin and
   * graph_end. plan.c calls it at the end of each run and passes the
   * counter to kernels as nb_kernel_call.step_at. */
  nb_status (*count)(nb_backend *be, uint64_t *counter);
} nb_backend_vtable;

struct nb_backend {
  const nb_backend_vtable *vt;
  char name[32];
  int index;
  void *impl;
  /* nb_backend_set_threads / nb_backend_set_cpus (CPU devices): 0 = unset */
  int threads;
  int cpu_first, cpu_count;
};

/* Copies `bytes` from src on backend sb to dst on backend db (a transfer
 * between devices): a memcpy between host devices, else through the
 * backends' upload/download. */
nb_status nb_backend_copy(nb_backend *db, void *dst, nb_backend *sb, const void *src, size_t bytes);

/* Backend constructors, one per device kind. */
nb_status nb_cpu_backend_open(int index, nb_backend **out);
/* Logical CPU devices cpu:0 .. cpu:(NB_CPU_MAX_DEVICES - 1). */
#define NB_CPU_MAX_DEVICES 64
/* Cores this process may run on (its affinity mask), at least 1. */
int nb_cpu_core_count(void);
/* 1 if nabla's CUDA backend has a kernel for `op`, in any build (cuda_ops.c). */
int nb_cuda_lists_op(nb_opcode op);
#ifdef NABLA_WITH_CUDA
nb_status nb_cuda_backend_open(int index, nb_backend **out);
/* 1 if the CUDA backend has a kernel for `op`; needs no device. */
int nb_cuda_has_kernel(nb_opcode op);
#endif

/* Variables of a state: storage on the backend of their device. */
typedef struct nb_state_var {
  char *name;
  nb_dtype dtype;
  int ndim;
  int64_t shape[NB_MAX_DIMS];
  size_t bytes;
  void *data;
  nb_backend *be; /* the device that holds it */
} nb_state_var;

/* Most devices one state holds variables on. */
#define NB_STATE_MAX_DEVICES 64

struct nb_state {
  nb_backend *be; /* the default device, given to nb_state_new */
  int n, cap;
  nb_state_var *vars;
  /* name -> index: open addressing, n_slots a power of two at least twice
   * n, -1 = empty; so that binding or finding one of many variables (a
   * LoRA file's thousands) is not a scan of all of them */
  int *slots;
  int n_slots;
  /* model parallelism: the devices its variables may live on; dev[0] = be.
   * owned[i]: opened by nb_state_device, freed with the state */
  nb_backend *dev[NB_STATE_MAX_DEVICES];
  int owned[NB_STATE_MAX_DEVICES];
  int n_dev;
};

/* Finds a variable by name, or creates it on backend `be` (one of the
 * state's devices) from the node's shape and init. Fails if an existing
 * entry has a different dtype or shape, or lives on another device. */
nb_status nb_state_bind(nb_state *st, nb_backend *be, const nb_tensor *var, nb_state_var **out);
/* The variable named `name`, or NULL. */
nb_state_var *nb_state_find(const nb_state *st, const char *name);
/* 1 if be is one of the state's devices. */
int nb_state_has_device(const nb_state *st, const nb_backend *be);

#endif
