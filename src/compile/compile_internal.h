/* Compiler internals: the passes and the plan they produce. */
#ifndef NB_COMPILE_INTERNAL_H
#define NB_COMPILE_INTERNAL_H

#include "../backend/backend_internal.h"
#include "nabla/dist.h"

/* Where a node's storage lives. */
typedef enum nb_storage_kind {
  NB_STORE_NONE,     /* dead, or an internal member of a fused group */
  NB_STORE_ARENA,    /* an intermediate in the planned arena */
  NB_STORE_INPUT,    /* a fed input, own buffer */
  NB_STORE_CONSTANT, /* uploaded once at compile time */
  NB_STORE_STATE,    /* a variable in the nb_state */
  NB_STORE_VIEW,     /* aliases its base */
} nb_storage_kind;

typedef struct nb_node_info {
  int keep;        /* needed by an output or an assign */
  int output;      /* marked with nb_tensor_set_output() when compiled */
  int group;       /* fused group id (elementwise nodes), else -1 */
  int step;        /* launch index that produces it, -1 if none */
  int last_use;    /* last launch index that reads its storage */
  int n_consumers; /* kept nodes reading it (through views too) */
  nb_storage_kind kind;
  size_t offset; /* arena offset */
  size_t bytes;
  void *own;             /* input/constant buffer, or state data */
  int inplace_of;        /* node whose arena region this one took over, or -1 */
  nb_fused_group *fused; /* the elementwise group ending at this node */
  /* Epilogue fusion (fuse.c): on a group's last node, the opaque node whose
   * kernel computes the group's input and then runs the group on its output
   * (NULL if none); on that opaque node, the id of the group's last node
   * (-1 if none): it has no storage and no launch of its own. */
  nb_tensor *producer;
  int epilogue_of;
  /* memplan.c: the variable whose storage this assigned value is written
   * into directly (its assign is then a no-op), or -1 */
  int assign_of;
} nb_node_info;

typedef struct nb_launch {
  nb_tensor *node; /* the node written (the last member for a group) */
  nb_fused_group *group;
  /* With an epilogue: the opaque node run by the kernel, whose result is
   * the group input group->ext[k] == producer and lands in node's storage.
   * Its inputs come first in `ins`, then the group's. */
  nb_tensor *producer;
  int n_ins;
  const nb_tensor **ins; /* the nodes read, in kernel order */
  void **in;             /* resolved input pointers, filled per run */
} nb_launch;

struct nb_plan {
  nb_graph *g;
  nb_backend *be;
  nb_state *st;
  nb_compile_options opt;
  int n_nodes;
  nb_node_info *info;
  int n_launch;
  nb_launch *launch;
  int n_groups;
  void *arena;
  size_t arena_bytes, naive_bytes;
  void *workspace;
  size_t workspace_bytes;
  uint64_t step;
  int n_inplace, n_fused, n_epilogues;
  /* NABLA_PROFILE set (not "0") at compile time: seconds spent in each
   * launch, summed over runs, printed to stderr by nb_plan_free(). NULL when
   * off. */
  double *prof;
  uint64_t prof_runs;
  int prof_cpu; /* NABLA_PROFILE=cpu: thread CPU time instead of wall time */
  /* the communicator of the plan's gradient reductions (dist.h), NULL if none:
   * nb_plan_run lets MPI progress them between launches */
  nb_dist *dist;
};

/* Passes, in order. Each returns an error status with a message. */
nb_status nb_pass_verify(nb_plan *p);
nb_status nb_pass_dce(nb_plan *p);
nb_status nb_pass_fuse(nb_plan *p);
nb_status nb_pass_schedule(nb_plan *p); /* launches + liveness */
nb_status nb_pass_memplan(nb_plan *p);  /* arena offsets, in-place */

/* The node whose storage `t` reads (itself unless a view). */
static inline const nb_tensor *nb_storage_of(const nb_tensor *t) { return t->base ? t->base : t; }

/* NABLA_PROFILE: prints the per-launch time table to stderr. */
void nb_plan_print_profile(const nb_plan *p);

/* First byte of `t`'s data in the plan (after compile). */
void *nb_plan_data(const nb_plan *p, const nb_tensor *t);

#endif
