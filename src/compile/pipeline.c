/* The memory side of pipelining: the order in which each device runs its
 * micro-batch tasks (1F1B), and the memory the parts of a plan then share.
 *
 * Every part (a segment, or one micro-batch instance of it) is a plan of
 * its own, and keeps three kinds of values in three buffers (memplan.c):
 * the temporaries of its run, dead when it ends, in its arena; its results
 * that later parts of the same device read in place (the forward
 * activations that the backward pass of the same micro-batch reads) in its
 * kept buffer (NB_FLAG_KEPT); the results the caller reads after the run
 * in its apart buffer (NB_FLAG_APART). A device runs one part at a time, so
 * all its parts share one arena, the largest. And once the last
 * same-device reader of instance i has run, instance j > i may use i's
 * kept buffer. With M micro-batches:
 *
 *   - GPipe runs every forward before any backward: the first device keeps
 *     the activations of all M micro-batches, M kept buffers;
 *   - 1F1B (PipeDream-flush, Megatron-LM's default) starts the backward of
 *     micro-batch i as soon as it can, and a device starts a new
 *     micro-batch only while fewer than (its last level - its first
 *     level) / 2 + 1 are open on it: on a chain of P devices, device d keeps
 *     P - d micro-batches alive instead of M. One device (gradient
 *     accumulation) keeps one.
 *
 * Both orders do the same arithmetic: each segment still runs its
 * micro-batches in order 0, 1, ..., M - 1 (so accumulators add in the same
 * order), and every task reads the same values, so the two give identical
 * results (tests/test_pipeline.c). */
#include <stdlib.h>
#include <string.h>

#include "mplan.h"

/* ---- the 1F1B order ------------------------------------------------------- */

/* Per device: the level range of its micro-batch segments, which sets how
 * many micro-batches may be open on it. */
static int open_limit(const nb_mplan *mp, int dev) {
  int lo = -1, hi = -1;
  for (int s = 0; s < mp->n_seg; s++) {
    const mp_seg *S = &mp->seg[s];
    if (S->dev != dev || S->phase != MP_MICRO) continue;
    if (lo < 0 || S->level < lo) lo = S->level;
    if (S->level > hi) hi = S->level;
  }
  return lo < 0 ? 1 : (hi - lo) / 2 + 1;
}

typedef struct {
  int *order;     /* tasks of the phase in the new order */
  char *placed;   /* task placed (in an earlier round) */
  char *now;      /* placed in this round */
  int *next_inst; /* per segment: the instance that may be placed next */
  int *started;   /* per device x micro-batch: tasks of it placed */
  int *total;     /* per device x micro-batch: tasks of it in all */
  int *open;      /* per device: micro-batches started and not finished */
  int *limit;     /* per device */
} sim;

static void sim_free(sim *S) {
  free(S->order);
  free(S->placed);
  free(S->now);
  free(S->next_inst);
  free(S->started);
  free(S->total);
  free(S->open);
  free(S->limit);
}

/* Lists the phase's tasks round by round: in each round every device takes
 * one task whose inputs were produced in earlier rounds, preferring the
 * lowest level (start forwards while the open limit allows, else run a
 * backward), then the lowest micro-batch. 1 on success, 0 if the rounds
 * stall (then the level order stays). */
static int simulate(const nb_mplan *mp, int a, int b, sim *S) {
  int n = b - a, M = mp->M, D = mp->n_dev;
  for (int t = a; t < b; t++) S->total[mp->task[t].dev * M + mp->task[t].inst]++;
  for (int d = 0; d < D; d++) S->limit[d] = open_limit(mp, d);
  int placed = 0;
  while (placed < n) {
    int progress = 0;
    memset(S->now, 0, (size_t)n);
    for (int d = 0; d < D; d++) {
      int best = -1;
      for (int t = a; t < b; t++) {
        const mp_task *T = &mp->task[t];
        if (T->dev != d || S->placed[t - a] || S->next_inst[T->seg] != T->inst) continue;
        int ready = 1;
        for (int k = 0; ready && k < T->n_dep; k++) {
          int u = T->dep[k];
          /* tasks of other phases ran before this one */
          ready = u < a || u >= b || (S->placed[u - a] && !S->now[u - a]);
        }
        if (!ready) continue;
        if (!S->started[d * M + T->inst] && S->open[d] >= S->limit[d]) continue;
        const mp_task *B = best >= 0 ? &mp->task[best] : NULL;
        int lt = mp->seg[T->seg].level, lb = B ? mp->seg[B->seg].level : 0;
        if (!B || lt < lb || (lt == lb && T->inst < B->inst)) best = t;
      }
      if (best < 0) continue;
      const mp_task *T = &mp->task[best];
      S->placed[best - a] = S->now[best - a] = 1;
      S->order[placed++] = best;
      S->next_inst[T->seg]++;
      int *st = &S->started[d * M + T->inst];
      if ((*st)++ == 0) S->open[d]++;
      if (*st == S->total[d * M + T->inst]) S->open[d]--;
      progress = 1;
    }
    if (!progress) return 0;
  }
  return 1;
}

nb_status nb_mp_schedule_1f1b(nb_mplan *mp) {
  int a = mp->phase_first[MP_MICRO], b = mp->phase_first[MP_MICRO + 1], n = b - a;
  if (mp->M < 2 || n < 2) return NB_OK;
  int D = mp->n_dev, M = mp->M;
  sim S = {0};
  S.order = malloc((size_t)n * sizeof *S.order);
  S.placed = calloc((size_t)n, 1);
  S.now = calloc((size_t)n, 1);
  S.next_inst = calloc((size_t)mp->n_seg, sizeof *S.next_inst);
  S.started = calloc((size_t)D * (size_t)M, sizeof *S.started);
  S.total = calloc((size_t)D * (size_t)M, sizeof *S.total);
  S.open = calloc((size_t)D, sizeof *S.open);
  S.limit = calloc((size_t)D, sizeof *S.limit);
  int *where = malloc((size_t)mp->n_task * sizeof *where);
  mp_task *moved = malloc((size_t)n * sizeof *moved);
  if (!S.order || !S.placed || !S.now || !S.next_inst || !S.started || !S.total || !S.open ||
      !S.limit || !where || !moved) {
    sim_free(&S);
    free(where);
    free(moved);
    return nb_error(NB_ERR_OOM, "nb_compile: out of memory");
  }
  if (simulate(mp, a, b, &S)) {
    /* task indices change: renumber the dependencies */
    for (int t = 0; t < mp->n_task; t++) where[t] = t;
    for (int k = 0; k < n; k++) where[S.order[k]] = a + k;
    for (int k = 0; k < n; k++) moved[k] = mp->task[S.order[k]];
    memcpy(&mp->task[a], moved, (size_t)n * sizeof *moved);
    for (int t = 0; t < mp->n_task; t++)
      for (int k = 0; k < mp->task[t].n_dep; k++) mp->task[t].dep[k] = where[mp->task[t].dep[k]];
  }
  sim_free(&S);
  free(where);
  free(moved);
  return NB_OK;
}

/* ---- arenas shared between micro-batch instances ---------------------------------- */

static int task_index(const nb_mplan *mp, int s, int i) {
  for (int t = 0; t < mp->n_task; t++)
    if (mp->task[t].seg == s && mp->task[t].inst == i) return t;
  return -1;
}

/* The last task that reads instance i of segment s in place (itself if
 * none), or -1 if something reads it that the task order does not bound. */
static int last_reader(const nb_mplan *mp, int s, int i) {
  const mp_seg *S = &mp->seg[s];
  int last = task_index(mp, s, i);
  for (int x = 0; x < mp->n_xfer; x++) {
    const mp_xfer *X = &mp->xfer[x];
    if (X->src_seg != s || X->cross) continue; /* a transfer is copied right after the task */
    const mp_seg *R = &mp->seg[X->dst_seg];
    if (R->phase != S->phase || R->n_inst != S->n_inst || R->dev != S->dev) return -1;
    int t = task_index(mp, X->dst_seg, i);
    if (t < 0) return -1;
    if (t > last) last = t;
  }
  return last;
}

/* Instance i of a segment takes the kept buffer of the first earlier
 * instance whose readers all ran before i starts (greedy interval colouring
 * in task order). Decided before the instances are compiled, so that each
 * gives its buffer back as soon as it exists (nb_mp_take_memory):
 * compiling M instances then never holds M of them, which on a GPU would
 * decide whether the plan fits at all. */
nb_status nb_mp_plan_sharing(nb_mplan *mp) {
  int M = mp->M;
  int *owner = malloc((size_t)(M > 0 ? M : 1) * sizeof *owner);
  int *free_after = malloc((size_t)(M > 0 ? M : 1) * sizeof *free_after);
  if (!owner || !free_after) {
    free(owner);
    free(free_after);
    return nb_error(NB_ERR_OOM, "nb_compile: out of memory");
  }
  nb_status st = NB_OK;
  for (int s = 0; !st && s < mp->n_seg; s++) {
    mp_seg *S = &mp->seg[s];
    if (S->n_inst < 2 || S->phase != MP_MICRO) continue;
    int ok = 1, n_slot = 0;
    for (int i = 0; ok && i < S->n_inst; i++) ok = last_reader(mp, s, i) >= 0;
    if (!ok) continue;
    S->lend = malloc((size_t)S->n_inst * sizeof *S->lend);
    if (!S->lend) {
      st = nb_error(NB_ERR_OOM, "nb_compile: out of memory");
      break;
    }
    for (int i = 0; i < S->n_inst; i++) {
      int start = task_index(mp, s, i), slot = -1;
      for (int k = 0; k < n_slot && slot < 0; k++)
        if (free_after[k] < start) slot = k;
      if (slot < 0) {
        slot = n_slot++;
        owner[slot] = i;
      }
      S->lend[i] = owner[slot];
      free_after[slot] = last_reader(mp, s, i);
    }
  }
  free(owner);
  free(free_after);
  return st;
}

/* Of the plans of device d compiled so far, the one that owns the largest
 * arena (workspace = 0) or workspace (1); NULL if none owns one. */
static nb_plan *largest(const nb_mplan *mp, int d, int workspace) {
  nb_plan *big = NULL;
  for (int s = 0; s < mp->n_seg; s++)
    for (int i = 0; mp->seg[s].dev == d && i < mp->seg[s].n_inst; i++) {
      nb_plan *q = mp->seg[s].inst[i];
      if (!q) continue;
      int owns =
          workspace ? q->workspace && !q->workspace_borrowed : q->arena && !q->arena_borrowed;
      size_t n = workspace ? q->workspace_bytes : q->arena_bytes;
      if (owns && (!big || n > (workspace ? big->workspace_bytes : big->arena_bytes))) big = q;
    }
  return big;
}

/* The loan that lets q run in `big`'s arena and workspace, where they are
 * large enough. */
static void scratch_loan(nb_plan *q, const nb_plan *arena, const nb_plan *ws, nb_plan_loan *l) {
  if (arena && arena != q && arena->arena_bytes >= q->arena_bytes && q->arena)
    l->arena = arena->arena;
  if (ws && ws != q && ws->workspace_bytes >= q->workspace_bytes && q->workspace) {
    l->workspace = ws->workspace;
    l->ws_bytes = ws->workspace_bytes;
  }
}

nb_status nb_mp_take_memory(nb_mplan *mp, int s, int i) {
  const mp_seg *S = &mp->seg[s];
  nb_plan *q = S->inst[i], *lender = S->inst[S->lend ? S->lend[i] : i];
  nb_plan_loan l = {0};
  /* the instances of a segment are one graph compiled M times: the same
   * sizes, so the check only guards the borrow */
  if (lender != q && lender->kept && q->kept_bytes <= lender->kept_bytes) l.kept = lender->kept;
  /* the largest arena and workspace compiled so far on this device, other
   * than q's own: q gives its own back if it fits in them */
  S->inst[i] = NULL;
  nb_plan *arena = largest(mp, S->dev, 0), *ws = largest(mp, S->dev, 1);
  S->inst[i] = q;
  scratch_loan(q, arena, ws, &l);
  if (!l.arena && !l.kept && !l.workspace) return NB_OK;
  return nb_plan_borrow_memory(q, l);
}

nb_status nb_mp_share_scratch(nb_mplan *mp) {
  nb_status st = NB_OK;
  for (int d = 0; !st && d < mp->n_dev; d++) {
    nb_plan *arena = largest(mp, d, 0), *ws = largest(mp, d, 1);
    for (int s = 0; !st && s < mp->n_seg; s++)
      for (int i = 0; !st && mp->seg[s].dev == d && i < mp->seg[s].n_inst; i++) {
        nb_plan_loan l = {0};
        scratch_loan(mp->seg[s].inst[i], arena, ws, &l);
        if (l.arena || l.workspace) st = nb_plan_borrow_memory(mp->seg[s].inst[i], l);
      }
  }
  return st;
}
