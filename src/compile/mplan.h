/* Model parallelism inside the compiler: a graph placed over several devices
 * and/or run in micro-batches becomes a set of segments, each an ordinary
 * single-device plan, joined by transfers (docs/architecture.md).
 *
 *   place.c      every kept node gets a device (the placement rules)
 *   partition.c  phases (pre / micro-batch / update), levels, segments, and
 *                one graph per segment with the transfers and accumulators
 *   multiplan.c  compiling the segments, running them (in order, or one
 *                thread per device), feeding inputs and reading outputs */
#ifndef NB_MPLAN_H
#define NB_MPLAN_H

#include <pthread.h>

#include "compile_internal.h"

/* Phases of a pipelined run (micro_batches M > 1); with M = 1 everything is
 * MP_MICRO, run once. */
enum { MP_PRE = 0, MP_MICRO = 1, MP_POST = 2, MP_PHASES = 3 };

typedef struct mp_seg {
  int phase, dev, level;
  nb_graph *g;      /* its nodes: clones of the user graph's, receives, accumulators */
  nb_tensor **map;  /* user node id -> its node in g (NULL: not there) */
  int n_inst;       /* M for micro-batch segments of a pipelined plan, else 1 */
  nb_plan **inst;   /* one compiled plan per instance (own arena each) */
  nb_tensor *first; /* accumulators: 1 for the instance that starts the sums */
  int n_acc;        /* accumulators it feeds */
  int *lend;        /* pipeline.c: the instance whose kept buffer each instance
                       uses (itself: its own); NULL: every instance its own */
} mp_seg;

/* A value that moves between segments: src's node (an output there) into
 * dst's receive input, or, with src_seg < 0, a variable sent at the start
 * of dst's phase. `cross`: between devices (a transfer), else a hand-over
 * between two segments of one device. */
typedef struct mp_xfer {
  const nb_tensor *node; /* the user graph node whose data moves */
  int src_seg;
  nb_tensor *src;
  const char *var; /* src_seg < 0: the variable's name */
  int scratch;     /* ... in the plan's scratch state (an accumulator) */
  int dst_seg;
  nb_tensor *dst;
  size_t bytes;
  int cross;
  int alias; /* within a device: dst reads src's data in place, nothing is copied */
} mp_xfer;

/* One segment instance to run, and what it waits for. */
typedef struct mp_task {
  int seg, inst, dev, phase;
  int n_dep, *dep; /* task indices */
  int done;        /* run of the current step finished */
} mp_task;

typedef struct mp_worker {
  struct nb_mplan *mp;
  int dev;
  pthread_t thread;
  int started;
} mp_worker;

typedef struct nb_mplan {
  int M; /* micro-batches per run (1: none) */
  int sequential;
  /* devices, by index: [0] is the compiling backend */
  int n_dev;
  nb_backend **dev;
  int *dev_threads; /* threads each device's kernels get in concurrent runs */
  /* the user graph: kept nodes and where each one went */
  int n_nodes;
  char *keep;
  int *node_dev;   /* device index, -1 for nodes not kept */
  int *node_phase; /* MP_* for computed nodes, -1 otherwise */
  int *node_level;
  int *node_seg; /* segment computing it, -1 for leaves and views */
  char *acc;     /* 1: a per-micro-batch value the update reads (summed over micro-batches) */
  int n_seg;
  mp_seg *seg;
  int n_xfer, cap_xfer;
  mp_xfer *xfer;
  nb_state *scratch; /* accumulators */
  /* execution */
  int n_task;
  mp_task *task;
  int phase_first[MP_PHASES + 1]; /* tasks of phase p: [phase_first[p], phase_first[p + 1]) */
  mp_worker *worker;              /* one per device (concurrent plans) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int sync_ready;
  int go_phase; /* phase the workers run now */
  uint64_t go_gen, done_gen;
  int running; /* workers still in the current phase */
  int quit;
  nb_status failed;
  char error[1024];
} nb_mplan;

/* pipeline.c: reorders the micro-batch phase's tasks into the 1F1B order
 * (each device starts a new micro-batch only while few enough are open on
 * it); keeps the level order if that order cannot be built. */
nb_status nb_mp_schedule_1f1b(nb_mplan *mp);
/* pipeline.c: decides which micro-batch instances of a segment use the
 * kept buffer (hand-overs) of an earlier instance whose in-place readers
 * all ran before them (seg->lend). After the task order is final, before
 * the instances are compiled. */
nb_status nb_mp_plan_sharing(nb_mplan *mp);
/* pipeline.c: right after instance i of segment s is compiled, gives its
 * own memory back where it can run in another's: its lender's kept buffer,
 * and the arena and workspace of its device's largest plan so far, so
 * compiling holds little more than the plan keeps. */
nb_status nb_mp_take_memory(nb_mplan *mp, int s, int i);
/* pipeline.c: every plan of a device runs in the device's largest arena and
 * workspace (a device runs one plan at a time, and both hold only values
 * that die within a run). After every instance is compiled, before
 * same-device hand-overs are aliased. */
nb_status nb_mp_share_scratch(nb_mplan *mp);

/* place.c: fills mp->node_dev for the kept nodes (mp->keep), opening the
 * devices through the state; p->be is device 0. */
nb_status nb_mp_place(nb_plan *p, nb_mplan *mp);
/* partition.c: phases, levels, segments and their graphs. */
nb_status nb_mp_partition(nb_plan *p, nb_mplan *mp);
/* The node whose storage t reads. */
static inline const nb_tensor *mp_owner(const nb_tensor *t) { return t->base ? t->base : t; }
/* Leaves: inputs, constants, variables. */
static inline int mp_is_leaf(const nb_tensor *t) {
  return t->op == NB_OP_INPUT || t->op == NB_OP_CONSTANT || t->op == NB_OP_VARIABLE;
}
/* Computed: a node with a launch of its own in some segment. */
static inline int mp_is_computed(const nb_tensor *t) { return !mp_is_leaf(t) && !t->base; }

#endif
