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

/* Opens a device: "cpu" (same as "cpu:0") or "cuda:N" when built with CUDA.
 * An unknown or unavailable device is an error with a one-line message. */
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

/* Device memory held by a backend's caching allocator (CUDA). */
typedef struct nb_memory_stats {
  size_t in_use;    /* bytes handed out and not yet freed */
  size_t reserved;  /* bytes taken from the device: in use + cached for reuse */
  size_t peak;      /* highest in_use so far */
  uint64_t allocs;  /* allocations served */
  uint64_t reused;  /* of which from the cache, without cudaMalloc */
  size_t dev_free;  /* free bytes on the whole device (cudaMemGetInfo) */
  size_t dev_total; /* bytes on the device */
} nb_memory_stats;

/* Fills *out; NB_ERR_UNSUPPORTED for a backend without its own allocator
 * (the CPU backend uses the C heap). */
nb_status nb_backend_memory_stats(nb_backend *be, nb_memory_stats *out);

/* Process-wide CPU thread count used by CPU kernels and BLAS (documented
 * global state). n <= 0 restores the default (all cores). */
void nb_set_num_threads(int n);
int nb_get_num_threads(void);

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

/* ---- plans ---------------------------------------------------------------- */

typedef struct nb_compile_options {
  int fuse;         /* fuse elementwise chains (default 1) */
  int reuse_memory; /* share arena regions between dead intermediates (1) */
  int inplace;      /* let elementwise ops overwrite a dying input (1) */
} nb_compile_options;

nb_compile_options nb_compile_defaults(void);

/* Compiles every node needed by the graph's outputs (nb_tensor_set_output)
 * and its assigns. Variables are created in `st` on first use, filled by
 * their nb_init; existing entries must match in dtype and shape. `opt` may
 * be NULL for defaults. */
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
  size_t arena_bytes; /* size of the one arena holding all intermediates */
  size_t naive_bytes; /* sum of the sizes of all planned intermediates */
  int nodes;          /* graph nodes kept after dead-node elimination */
  int kernels;        /* kernels launched per run after fusion */
  int fused_groups;   /* elementwise groups with more than one op */
  int inplace;        /* nodes written over a dying input */
} nb_plan_stats;

nb_plan_stats nb_plan_get_stats(const nb_plan *p);

#ifdef __cplusplus
}
#endif

#endif
