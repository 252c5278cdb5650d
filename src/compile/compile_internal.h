/* Compiler internals: the passes and the plan they produce. */
#ifndef NB_COMPILE_INTERNAL_H
#define NB_COMPILE_INTERNAL_H

#include "../backend/backend_internal.h"
#include "../core/collective.h"

/* Where a node's storage lives. */
typedef enum nb_storage_kind {
  NB_STORE_NONE,     /* dead, or an internal member of a fused group */
  NB_STORE_ARENA,    /* an intermediate in the planned arena */
  NB_STORE_INPUT,    /* a fed input, own buffer */
  NB_STORE_CONSTANT, /* uploaded once at compile time */
  NB_STORE_STATE,    /* a variable in the nb_state */
  NB_STORE_VIEW,     /* aliases its base */
} nb_storage_kind;

/* The buffers of a plan's intermediates (memplan.c). */
typedef enum nb_region {
  NB_REGION_ARENA, /* intermediates that die within the run */
  NB_REGION_KEPT,  /* hand-overs another plan reads after the run */
  NB_REGION_APART, /* results the caller reads after the run */
} nb_region;

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
  /* an input whose `own` points at another plan's data (nb_plan_alias_input):
   * its buffer was freed, and `own` is not this plan's to free */
  int aliased;
  /* where an arena node lives: the arena (its temporaries), or, for a
   * result flagged NB_FLAG_KEPT or NB_FLAG_APART (or the storage of one),
   * the plan's `kept` or `apart` buffer; offset is into that */
  nb_region region;
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
  /* results outside the arena: hand-overs (NB_FLAG_KEPT) and what the
   * caller reads (NB_FLAG_APART); neither is reused within a run */
  void *kept, *apart;
  size_t kept_bytes, apart_bytes;
  /* arena / kept buffer / workspace lent by another plan
   * (nb_plan_borrow_memory): not this plan's to free */
  int arena_borrowed, kept_borrowed, workspace_borrowed;
  uint64_t step;
  int n_inplace, n_fused, n_epilogues;
  /* NABLA_PROFILE set (not "0") at compile time: seconds spent in each
   * launch, summed over runs, printed to stderr by nb_plan_free(). NULL when
   * off. */
  double *prof;
  uint64_t prof_runs;
  int prof_cpu; /* NABLA_PROFILE=cpu: thread CPU time instead of wall time */
  /* the communicator of the plan's gradient reductions (collective.h, filled
   * by src/dist), NULL if none: nb_plan_run lets MPI progress them between
   * launches */
  const nb_collective *dist;
  /* variables flagged NB_FLAG_SCRATCH bind here instead of in st */
  nb_state *scratch;
  /* a plan over several devices or micro-batches (multiplan.c): the public
   * plan functions hand it over; the fields above are then unused */
  struct nb_mplan *mp;
  /* CUDA graphs (plan.c, docs/cuda.md): the backend's recording of one whole
   * run, replayed by the runs after it. graph_state: 0 = not recorded yet
   * (the 2nd run records: the 1st does the kernels' lazy set-up), 1 =
   * recorded, -1 = never (the backend has none, it is switched off, or the
   * plan cannot be recorded; graph_why says which) */
  void *graph;
  int graph_state;
  uint64_t graph_plain_runs; /* runs made by plain launches so far */
  char graph_why[256];
  /* A plan with dropout on a backend with `count`: the run counter in the
   * backend's memory (8 bytes), which its kernels read and each run adds 1
   * to, so a recorded run draws a new mask at every replay. counter_at is
   * the value it holds as far as the host knows (NB_COUNTER_UNKNOWN after a
   * failure); a run first makes it `step` when it differs (nb_plan_set_step,
   * a multi-device plan's micro-batch numbering). */
  uint64_t *counter;
  uint64_t counter_at;
};

#define NB_COUNTER_UNKNOWN UINT64_MAX

/* The launch whose group draws a dropout mask (dropout with p > 0), or -1. */
int nb_plan_dropout_launch(const nb_plan *p);

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

/* Memory one plan lends another (NULL: keep one's own): an arena and a
 * kept buffer of at least the borrower's sizes, a workspace of ws_bytes. */
typedef struct nb_plan_loan {
  void *arena, *kept, *workspace;
  size_t ws_bytes;
} nb_plan_loan;

/* Makes p run in the loan's memory, freeing what p had in its place. The
 * lender must outlive p, and the two must never run at the same time or
 * hold values the other still needs: the plans of one device share one
 * arena (a device runs one plan at a time, and an arena holds only values
 * that die within the run), and a micro-batch instance takes the kept
 * buffer of an earlier one once every reader of the first is done
 * (pipeline.c). */
nb_status nb_plan_borrow_memory(nb_plan *p, nb_plan_loan loan);

/* Frees the plan's CUDA graph, if any (plan.c); a recorded plan records
 * anew at its next run (after its pointers changed: nb_plan_alias_input). */
void nb_plan_graph_drop(nb_plan *p);

/* nb_compile without the argument checks and without model parallelism:
 * one graph on one backend, variables in st (scratch: NB_FLAG_SCRATCH ones,
 * may be NULL). The multi-device compiler compiles each part with it. */
nb_status nb_compile_single(nb_graph *g, nb_backend *be, nb_state *st, nb_state *scratch,
                            const nb_compile_options *opt, nb_plan **out);

/* Makes input node `input` of p read `data` (memory of p's backend that
 * another plan of the same device writes) instead of its own buffer, so a
 * value handed between two plans of one device is not copied. */
nb_status nb_plan_alias_input(nb_plan *p, const nb_tensor *input, void *data);

/* ---- model parallelism (place.c, partition.c, multiplan.c) ------------------------ */

/* 1 if compiling g needs the multi-device compiler: a placed node, a
 * variable the state holds on another device, or micro-batches. */
int nb_mp_wanted(const nb_graph *g, const nb_backend *be, const nb_state *st,
                 const nb_compile_options *opt);
/* Compiles g over several devices and/or micro-batches into p (p->mp). */
nb_status nb_mp_compile(nb_plan *p);
void nb_mp_free(struct nb_mplan *mp);
nb_status nb_mp_set_input(nb_plan *p, const nb_tensor *input, const void *data, size_t bytes);
nb_status nb_mp_run(nb_plan *p);
nb_status nb_mp_get(nb_plan *p, const nb_tensor *t, void *dst, size_t bytes);
void nb_mp_stats(const nb_plan *p, nb_plan_stats *s);

#endif
