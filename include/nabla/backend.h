/* nabla backends, persistent state, and compiled plans.
 *
 * A plan is a graph compiled for one backend: verified, pruned, fused, and
 * memory-planned so that every intermediate lives in one arena whose regions
 * are reused once their last consumer has run. Variables (parameters,
 * optimizer moments, running statistics) live in an nb_state, outside the
 * arena, so several plans (train, eval) can share them. */
#ifndef NABLA_BACKEND_H
#define NABLA_BACKEND_H

#include "graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_backend nb_backend;
typedef struct nb_state nb_state;
typedef struct nb_plan nb_plan;

/* ---- backends ------------------------------------------------------------- */

/* Opens a device: "cpu" (same as "cpu:0"), a logical CPU device "cpu:N"
 * (N < 64, below), or "cuda:N" when built with CUDA. An unknown or
 * unavailable device is an error with a one-line message.
 *
 * Logical CPU devices: cpu:0, cpu:1, ... are separate devices of the one
 * host, as GPUs would be: each holds its own variables and plans (its own
 * arena), runs its kernels with its own threads, and data crosses between
 * them only through the transfers a model-parallel plan inserts. They let
 * model-parallel and pipelined training run, and be tested, on a machine
 * without a GPU (docs/distributed.md, "Model parallelism"). */
nb_status nb_backend_new(const char *device, nb_backend **out);
void nb_backend_free(nb_backend *be);
/* "cpu:0", ... */
const char *nb_backend_name(const nb_backend *be);

/* 1 if the backend has a kernel for the op named `op` (see nb_op_get_info). */
int nb_backend_supports_op(nb_backend *be, const char *op);
/* The same question for a kind of device ("cpu", "cuda") without opening
 * one, so it works on a machine without a GPU: 1 if nabla's backend of that
 * kind has a kernel for `op`. A build without CUDA still answers for the
 * CUDA backend (`nabla ops` prints the same table everywhere); opening a
 * cuda device there fails. Leaves and views need no kernel: 1. 0 for an
 * unknown op or kind. */
int nb_backend_kind_supports_op(const char *kind, const char *op);

/* Device memory held by a backend's caching allocator (CUDA), and its
 * transfers from the host. */
typedef struct nb_memory_stats {
  size_t in_use;    /* bytes handed out and not yet freed */
  size_t reserved;  /* bytes taken from the device: in use + cached for reuse */
  size_t peak;      /* highest in_use so far */
  uint64_t allocs;  /* allocations served */
  uint64_t reused;  /* of which from the cache, without cudaMalloc */
  size_t dev_free;  /* free bytes on the whole device (cudaMemGetInfo) */
  size_t dev_total; /* bytes on the device */
  /* uploads pass through pinned staging buffers (docs/cuda.md) */
  uint64_t uploads;       /* pieces uploaded (of at most 8 MiB each) */
  uint64_t uploads_async; /* of which crossed on the copy stream, overlapping kernels */
  uint64_t upload_waits;  /* times the host waited for a staging buffer to free up */
  size_t staging;         /* bytes of pinned host and landing buffers held */
} nb_memory_stats;

/* Fills *out; NB_ERR_UNSUPPORTED for a backend without its own allocator
 * (the CPU backend uses the C heap). */
nb_status nb_backend_memory_stats(nb_backend *be, nb_memory_stats *out);

/* Process-wide CPU thread count used by CPU kernels and BLAS (documented
 * global state). n <= 0 restores the default: $OMP_NUM_THREADS when set,
 * else all cores. */
void nb_set_num_threads(int n);
int nb_get_num_threads(void);

/* The threads of one CPU device's kernels (n <= 0: unset). Unset, a device
 * uses nb_get_num_threads() when plans run their devices one after another,
 * and an equal share of it when a plan runs several CPU devices at once.
 * NB_ERR_UNSUPPORTED for a non-CPU backend. */
nb_status nb_backend_set_threads(nb_backend *be, int n);
/* The device's own thread count, 0 when unset. */
int nb_backend_threads(const nb_backend *be);
/* Pins the threads that run a CPU device's kernels, when a plan runs its
 * devices concurrently, to cores [first, first + count) (count 0: no
 * pinning). NB_ERR_INVALID_ARG for cores this process may not use. */
nb_status nb_backend_set_cpus(nb_backend *be, int first, int count);

/* ---- state ---------------------------------------------------------------- */

nb_status nb_state_new(nb_backend *be, nb_state **out);
void nb_state_free(nb_state *st);
int nb_state_count(const nb_state *st);
/* Describes entry i; any out pointer may be NULL. `shape` points to state
 * memory valid until the state is freed. */
nb_status nb_state_entry(const nb_state *st, int i, const char **name, nb_dtype *dt, int *ndim,
                         const int64_t **shape);
/* Copies a variable's data out of / into the state (bytes must match). */
nb_status nb_state_read(const nb_state *st, const char *name, void *dst, size_t bytes);
nb_status nb_state_write(nb_state *st, const char *name, const void *src, size_t bytes);

/* Model parallelism: a state holds each variable on the device its graph
 * node is placed on (nb_tensor_set_device), so parameters live with their
 * layer; reads, writes and checkpoints work by name whatever the device.
 * The state's backend is its default device. nb_state_device returns the
 * state's backend for `device` ("cpu:1"): the default one, one lent with
 * nb_state_add_device, or else one it opens now with nb_backend_new (an
 * error for an unavailable device) and frees with itself. nb_compile() uses
 * it for every device a graph places nodes on. */
nb_status nb_state_device(nb_state *st, const char *device, nb_backend **out);
/* Lends the state a backend for another device (it must outlive the
 * state); an error if the state already has a different one for it. */
nb_status nb_state_add_device(nb_state *st, nb_backend *be);
/* The device that holds variable i ("cpu:0"; "" when out of range). */
const char *nb_state_entry_device(const nb_state *st, int i);

/* ---- plans ---------------------------------------------------------------- */

typedef struct nb_compile_options {
  int fuse;         /* fuse elementwise chains (default 1) */
  int reuse_memory; /* share arena regions between dead intermediates (1) */
  int inplace;      /* let elementwise ops overwrite a dying input (1) */
  /* Pipelining (docs/distributed.md, "Model parallelism"). M > 1: each run
   * takes M micro-batches (a pipeline; see `schedule`): the graph is built for ONE micro-batch,
   * inputs marked NB_MICRO_SPLIT are fed M micro-batches at once, forward
   * and backward run once per micro-batch (devices overlapping), the
   * gradients are averaged over them (the loss must be a mean), and the
   * update runs once. 0 or 1: one batch per run (default). */
  int micro_batches;
  /* 1: a plan spanning several devices runs them one after another on the
   * calling thread (the reference). 0 (default): each device runs on a
   * thread of its own, concurrently where the data flow allows. */
  int sequential;
  /* With micro_batches > 1: the order in which each device runs its
   * micro-batches. NB_SCHEDULE_1F1B (default) starts a micro-batch's
   * backward pass as soon as it can, so a chain of P devices keeps P - d
   * micro-batches' activations alive on device d, and one device
   * (gradient accumulation) keeps one; NB_SCHEDULE_GPIPE runs every
   * forward pass before the backward passes and keeps all M. Both compute
   * the same values. */
  int schedule;
} nb_compile_options;

enum { NB_SCHEDULE_1F1B = 0, NB_SCHEDULE_GPIPE = 1 };

nb_compile_options nb_compile_defaults(void);

/* Compiles every node needed by the graph's outputs (nb_tensor_set_output)
 * and its assigns. Variables are created in `st` on first use, filled by
 * their nb_init; existing entries must match in dtype and shape. `opt` may
 * be NULL for defaults.
 *
 * Model parallelism: nodes placed on other devices than `be`
 * (nb_tensor_set_device, nb_graph_set_device) run there, with backends from
 * nb_state_device(st, ...); the compiler places the unplaced nodes, splits
 * the graph by device, inserts a transfer wherever a value crosses devices
 * (forward and backward alike) and plans each device's memory on its own.
 * The plan is used like any other. `be` must be one of st's devices. */
nb_status nb_compile(nb_graph *g, nb_backend *be, nb_state *st, const nb_compile_options *opt,
                     nb_plan **out);
void nb_plan_free(nb_plan *p);

/* Copies data for an input node (bytes = numel * dtype size). */
nb_status nb_plan_set_input(nb_plan *p, const nb_tensor *input, const void *data, size_t bytes);
/* Runs one step: every kept node in order, then the assigns. */
nb_status nb_plan_run(nb_plan *p);
/* Copies an output node's (or a variable's) current value to dst. */
nb_status nb_plan_get(nb_plan *p, const nb_tensor *t, void *dst, size_t bytes);

/* Number of completed runs; seeds per-step randomness such as dropout. Set
 * it when resuming from a checkpoint. */
uint64_t nb_plan_step(const nb_plan *p);
void nb_plan_set_step(nb_plan *p, uint64_t step);

typedef struct nb_plan_stats {
  size_t arena_bytes;    /* size of the one arena holding all intermediates
                            (several devices or micro-batches: all arenas) */
  size_t naive_bytes;    /* sum of the sizes of all planned intermediates */
  int nodes;             /* graph nodes kept after dead-node elimination */
  int kernels;           /* kernels launched per run after fusion */
  int fused_groups;      /* elementwise groups with more than one op */
  int inplace;           /* nodes written over a dying input */
  int devices;           /* devices the plan runs on (1 for an ordinary plan) */
  int transfers;         /* copies between devices per run */
  size_t transfer_bytes; /* bytes they move per run */
  int graph;             /* CUDA graphs (docs/cuda.md): 1 = each run replays one
                            recorded graph; 0 = not recorded yet (the 2nd run
                            records); -1 = launches one by one (a CPU device,
                            NABLA_CUDA_GRAPHS=0, or a plan that cannot be
                            recorded: NABLA_CUDA_VERBOSE=1 prints why) */
} nb_plan_stats;

nb_plan_stats nb_plan_get_stats(const nb_plan *p);

/* ---- model-parallel plans ---------------------------------------------------- */

/* One device of a plan. */
typedef struct nb_plan_device {
  const char *name;   /* "cpu:1" */
  size_t arena_bytes; /* its arenas (one per micro-batch for pipelined work) */
  int kernels;        /* kernels it launches per run */
  int threads;        /* threads its kernels use (0: nb_get_num_threads()) */
} nb_plan_device;

/* A value that crosses devices: the graph node whose data moves (for a view,
 * the node that owns the data), from and to which device, how many bytes
 * (per micro-batch), and how often per run (M for pipelined work, else 1). */
typedef struct nb_plan_transfer {
  const nb_tensor *node;
  const char *src, *dst;
  size_t bytes;
  int per_run;
} nb_plan_transfer;

int nb_plan_device_count(const nb_plan *p);
nb_status nb_plan_device_info(const nb_plan *p, int i, nb_plan_device *out);
int nb_plan_transfer_count(const nb_plan *p);
nb_status nb_plan_transfer_info(const nb_plan *p, int i, nb_plan_transfer *out);
/* Prints the plan's devices, what runs where, and its transfers. */
nb_status nb_plan_print_placement(const nb_plan *p, FILE *f);

#ifdef __cplusplus
}
#endif

#endif
