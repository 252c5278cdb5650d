/* The communicator: MPI when built with it and started by a launcher, else
 * one process. All MPI calls of nabla live in this file, so a build without
 * MPI differs only here (the single-process paths are used either way when
 * the communicator has one rank). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_internal.h"
#include "nabla/dist.h"

#ifdef NABLA_WITH_MPI
#include <mpi.h>
#endif

typedef struct pending_op {
  float *buf;
  int64_t count;
#ifdef NABLA_WITH_MPI
  MPI_Request req;
#endif
} pending_op;

struct nb_dist {
  int rank, size;
  int mpi;  /* 1: comm is live */
  int self; /* NB_DIST_SELF */
  int failed_together;
#ifdef NABLA_WITH_MPI
  MPI_Comm comm;
#endif
  pending_op *pending;
  int n_pending, cap_pending;
  nb_collective coll; /* how the graph ops and backends reach this (collective.h) */
};

#ifdef NABLA_WITH_MPI
/* MPI is process-wide and can be initialised only once: the communicators
 * that use it are counted, and the last one finalises it if nabla
 * initialised it (documented global state, like MPI's own). */
static int mpi_users;
static int mpi_initialised_by_us;
static int mpi_finalised_by_us;
#endif

int nb_dist_mpi_built(void) {
#ifdef NABLA_WITH_MPI
  return 1;
#else
  return 0;
#endif
}

/* The launcher's idea of the job size (0 when unknown or not launched). */
static int launcher_size(const char **var) {
  static const char *const names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    const char *v = getenv(names[i]);
    if (v && *v) {
      if (var) *var = names[i];
      return atoi(v);
    }
  }
  if (var) *var = NULL;
  return 0;
}

int nb_dist_launched(void) {
  return launcher_size(NULL) > 0 || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

int nb_dist_rank(const nb_dist *d) { return d ? d->rank : 0; }
int nb_dist_size(const nb_dist *d) { return d ? d->size : 1; }
const char *nb_dist_kind(const nb_dist *d) {
  return d && d->mpi ? "mpi" : d && d->self ? "self" : "single";
}
int nb_dist_averages_grads(const nb_dist *d) { return d && (d->size > 1 || d->self); }
int nb_dist_failed_together(const nb_dist *d) { return d ? d->failed_together : 0; }
void nb_dist_set_failed_together(nb_dist *d) {
  if (d) d->failed_together = 1;
}

#ifdef NABLA_WITH_MPI
/* MPI's reason for a failed call, as an nabla error. */
static nb_status mpi_fail(int rc, const char *what) {
  char msg[MPI_MAX_ERROR_STRING + 1] = "";
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", rc);
  return nb_error(NB_ERR_IO, "%s failed: %s (a rank may have failed or exited)", what, msg);
}

static nb_status open_mpi(nb_dist *d) {
  int inited = 0, finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized || mpi_finalised_by_us)
    return nb_error(NB_ERR_STATE, "nb_dist_init: MPI was already finalised in this process; "
                                  "keep one nb_dist open for the whole run");
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Init_thread");
    mpi_initialised_by_us = 1;
  }
  /* our own communicator: errors come back to us instead of aborting in
   * MPI's default handler, and user code on MPI_COMM_WORLD cannot match
   * our messages */
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Comm_dup");
  MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(d->comm, &d->rank);
  MPI_Comm_size(d->comm, &d->size);
  d->mpi = 1;
  mpi_users++;
  return NB_OK;
}

static void close_mpi(nb_dist *d) {
  MPI_Comm_free(&d->comm);
  d->mpi = 0;
  if (--mpi_users == 0 && mpi_initialised_by_us) {
    MPI_Finalize();
    mpi_initialised_by_us = 0;
    mpi_finalised_by_us = 1;
  }
}

static MPI_Datatype mpi_type(nb_dtype dt) {
  switch (dt) {
  case NB_F32: return MPI_FLOAT;
  case NB_I32: return MPI_INT32_T;
  case NB_I64: return MPI_INT64_T;
  default: return MPI_DATATYPE_NULL;
  }
}

static MPI_Op mpi_op(nb_dist_op op) {
  return op == NB_DIST_MIN ? MPI_MIN : op == NB_DIST_MAX ? MPI_MAX : MPI_SUM;
}

/* MPI counts are ints: larger buffers go in chunks. */
static nb_status mpi_allreduce(nb_dist *d, void *buf, int64_t count, MPI_Datatype t, size_t es,
                               nb_dist_op op) {
  const int64_t chunk = (int64_t)1 << 30;
  for (int64_t at = 0; at < count; at += chunk) {
    int n = (int)(count - at < chunk ? count - at : chunk);
    int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)at * es, n, t, mpi_op(op), d->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Allreduce");
  }
  return NB_OK;
}
#endif

static void fill_collective(nb_dist *d);

nb_status nb_dist_init(nb_dist_mode mode, nb_dist **out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_dist_init: out is NULL");
  *out = NULL;
  if (mode < NB_DIST_AUTO || mode > NB_DIST_SELF)
    return nb_error(NB_ERR_INVALID_ARG, "nb_dist_init: unknown mode %d", (int)mode);
  const char *var = NULL;
  int launched_size = launcher_size(&var);
  if (mode == NB_DIST_AUTO) {
    if (!nb_dist_launched()) {
      mode = NB_DIST_SINGLE;
    } else if (nb_dist_mpi_built()) {
      mode = NB_DIST_MPI;
    } else if (launched_size > 1) {
      /* each process would train alone and all would write the same files */
      return nb_error(NB_ERR_UNSUPPORTED,
                      "started by an MPI launcher (%s=%d) but this nabla was built without MPI; "
                      "install Open MPI (libopenmpi-dev) and rebuild, or run without mpirun",
                      var, launched_size);
    } else {
      mode = NB_DIST_SINGLE;
    }
  }
  if (mode == NB_DIST_SELF && launched_size > 1)
    return nb_error(NB_ERR_STATE,
                    "a one-process distributed run (NB_DIST_SELF) was asked for, but an MPI "
                    "launcher started %d processes (%s): each would train alone",
                    launched_size, var);
  if (mode == NB_DIST_MPI && !nb_dist_mpi_built())
    return nb_error(NB_ERR_UNSUPPORTED, "distributed training needs MPI, and this nabla was built "
                                        "without it: install Open MPI (libopenmpi-dev) and "
                                        "rebuild (CMake -DNABLA_MPI=ON)");
  if (mode == NB_DIST_MPI && !nb_dist_launched())
    return nb_error(NB_ERR_STATE, "distributed training needs an MPI launcher: run it as "
                                  "`mpirun -np N nabla ...` (no OMPI_COMM_WORLD_SIZE, PMIX_RANK "
                                  "or PMI_RANK in the environment)");
  nb_dist *d = calloc(1, sizeof *d);
  if (!d) return nb_error(NB_ERR_OOM, "nb_dist_init: out of memory");
  d->size = 1;
  d->self = mode == NB_DIST_SELF;
#ifdef NABLA_WITH_MPI
  if (mode == NB_DIST_MPI) {
    nb_status st = open_mpi(d);
    if (st) {
      free(d);
      return st;
    }
  }
#endif
  fill_collective(d);
  *out = d;
  return NB_OK;
}

void nb_dist_free(nb_dist *d) {
  if (!d) return;
#ifdef NABLA_WITH_MPI
  if (d->mpi) close_mpi(d);
#endif
  free(d->pending);
  free(d);
}

nb_status nb_dist_barrier(nb_dist *d) {
  if (!d) return nb_error(NB_ERR_INVALID_ARG, "nb_dist_barrier: NULL communicator");
#ifdef NABLA_WITH_MPI
  if (d->mpi) {
    int rc = MPI_Barrier(d->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Barrier");
  }
#endif
  return NB_OK;
}

nb_status nb_dist_allreduce(nb_dist *d, void *buf, int64_t count, nb_dtype dt, nb_dist_op op) {
  if (!d || (count > 0 && !buf) || count < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_dist_allreduce: NULL communicator or buffer, or a "
                                        "negative count");
  if (dt != NB_F32 && dt != NB_I32 && dt != NB_I64)
    return nb_error(NB_ERR_DTYPE, "nb_dist_allreduce: dtype %s (f32, i32 or i64 expected)",
                    nb_dtype_name(dt));
  if (op < NB_DIST_SUM || op > NB_DIST_MAX)
    return nb_error(NB_ERR_INVALID_ARG, "nb_dist_allreduce: unknown op %d", (int)op);
#ifdef NABLA_WITH_MPI
  if (d->mpi) return mpi_allreduce(d, buf, count, mpi_type(dt), nb_dtype_size(dt), op);
#endif
  return NB_OK; /* one rank: the buffer already is the result */
}

nb_status nb_dist_allreduce_f64(nb_dist *d, double *buf, int64_t count, nb_dist_op op) {
  if (!d || (count > 0 && !buf) || count < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_dist_allreduce_f64: NULL communicator or buffer, "
                                        "or a negative count");
  if (op < NB_DIST_SUM || op > NB_DIST_MAX)
    return nb_error(NB_ERR_INVALID_ARG, "nb_dist_allreduce_f64: unknown op %d", (int)op);
#ifdef NABLA_WITH_MPI
  if (d->mpi) return mpi_allreduce(d, buf, count, MPI_DOUBLE, sizeof(double), op);
#endif
  return NB_OK;
}

nb_status nb_dist_broadcast(nb_dist *d, void *buf, size_t bytes, int root) {
  if (!d || (bytes && !buf))
    return nb_error(NB_ERR_INVALID_ARG, "nb_dist_broadcast: NULL communicator or buffer");
  if (root < 0 || root >= d->size)
    return nb_error(NB_ERR_INVALID_ARG, "nb_dist_broadcast: root %d outside [0, %d)", root,
                    d->size);
#ifdef NABLA_WITH_MPI
  if (d->mpi) {
    const size_t chunk = (size_t)1 << 30;
    for (size_t at = 0; at < bytes; at += chunk) {
      int n = (int)(bytes - at < chunk ? bytes - at : chunk);
      int rc = MPI_Bcast((char *)buf + at, n, MPI_BYTE, root, d->comm);
      if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Bcast");
    }
  }
#endif
  return NB_OK;
}

nb_status nb_dist_check_same(nb_dist *d, int n, const char *const *names, const int64_t *values) {
  if (!d || n < 0 || (n && (!names || !values)))
    return nb_error(NB_ERR_INVALID_ARG, "nb_dist_check_same: NULL argument");
  if (d->size == 1 || n == 0) return NB_OK;
  int64_t *lo = malloc(2 * (size_t)n * sizeof *lo);
  if (!lo) return nb_error(NB_ERR_OOM, "nb_dist_check_same: out of memory");
  int64_t *hi = lo + n;
  memcpy(lo, values, (size_t)n * sizeof *lo);
  memcpy(hi, values, (size_t)n * sizeof *hi);
  nb_status st = nb_dist_allreduce(d, lo, n, NB_I64, NB_DIST_MIN);
  if (!st) st = nb_dist_allreduce(d, hi, n, NB_I64, NB_DIST_MAX);
  for (int i = 0; !st && i < n; i++) {
    if (lo[i] == hi[i]) continue;
    st = nb_error(NB_ERR_STATE,
                  "the ranks disagree on %s (%lld on some, %lld on others; this rank has %lld): "
                  "every rank must run the same model file, data and options",
                  names[i], (long long)lo[i], (long long)hi[i], (long long)values[i]);
    d->failed_together = 1;
  }
  free(lo);
  return st;
}

nb_status nb_dist_agree(nb_dist *d, nb_status st) {
  if (nb_dist_size(d) <= 1) return st;
  /* the lowest failed rank, or size when none failed */
  int32_t first = st ? d->rank : d->size;
  char keep[1024];
  snprintf(keep, sizeof keep, "%s", nb_last_error());
  nb_status rc = nb_dist_allreduce(d, &first, 1, NB_I32, NB_DIST_MIN);
  if (rc) return rc;
  if (first == d->size) return NB_OK;
  d->failed_together = 1;
  if (st) return nb_error(st, "%s", keep);
  return nb_error(NB_ERR_STATE, "rank %d failed (its own message says why); stopping with it",
                  (int)first);
}

void nb_dist_abort(nb_dist *d, int code, const char *message) {
  if (message)
    fprintf(stderr, "nabla: rank %d of %d: %s\n", nb_dist_rank(d), nb_dist_size(d), message);
  fflush(stderr);
#ifdef NABLA_WITH_MPI
  if (d && d->mpi && d->size > 1) MPI_Abort(d->comm, code ? code : 1);
#endif
  (void)code;
}

/* ---- non-blocking reductions ------------------------------------------------ */

static int find_pending(const nb_dist *d, const float *buf) {
  for (int i = 0; i < d->n_pending; i++)
    if (d->pending[i].buf == buf) return i;
  return -1;
}

nb_status nb_dist_iallreduce_start(nb_dist *d, float *buf, int64_t count) {
  if (!d || (count > 0 && !buf) || count < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_dist_iallreduce_start: NULL communicator or buffer");
  if (count > INT_MAX)
    return nb_error(NB_ERR_UNSUPPORTED,
                    "nb_dist_iallreduce_start: %lld elements in one reduction (at most %d)",
                    (long long)count, INT_MAX);
  if (find_pending(d, buf) >= 0)
    return nb_error(NB_ERR_STATE, "nb_dist_iallreduce_start: a reduction on this buffer is "
                                  "still pending");
  if (d->n_pending == d->cap_pending) {
    int cap = d->cap_pending ? 2 * d->cap_pending : 16;
    pending_op *p = realloc(d->pending, (size_t)cap * sizeof *p);
    if (!p) return nb_error(NB_ERR_OOM, "nb_dist_iallreduce_start: out of memory");
    d->pending = p;
    d->cap_pending = cap;
  }
  pending_op *op = &d->pending[d->n_pending];
  op->buf = buf;
  op->count = count;
#ifdef NABLA_WITH_MPI
  op->req = MPI_REQUEST_NULL;
  if (d->mpi && d->size > 1) {
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, d->comm, &op->req);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Iallreduce");
  }
#endif
  d->n_pending++;
  return NB_OK;
}

nb_status nb_dist_iallreduce_wait(nb_dist *d, float *buf) {
  if (!d) return nb_error(NB_ERR_INVALID_ARG, "nb_dist_iallreduce_wait: NULL communicator");
  int i = find_pending(d, buf);
  if (i < 0)
    return nb_error(NB_ERR_STATE, "nb_dist_iallreduce_wait: no reduction was started on this "
                                  "buffer");
  nb_status st = NB_OK;
#ifdef NABLA_WITH_MPI
  if (d->pending[i].req != MPI_REQUEST_NULL) {
    int rc = MPI_Wait(&d->pending[i].req, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) st = mpi_fail(rc, "MPI_Wait (gradient allreduce)");
  }
#endif
  d->pending[i] = d->pending[--d->n_pending];
  return st;
}

int nb_dist_pending(const nb_dist *d) { return d ? d->n_pending : 0; }

nb_status nb_dist_drain(nb_dist *d) {
  nb_status st = NB_OK;
  while (d && d->n_pending > 0) {
    nb_status w = nb_dist_iallreduce_wait(d, d->pending[d->n_pending - 1].buf);
    if (!st) st = w;
  }
  return st;
}

void nb_dist_progress(nb_dist *d) {
#ifdef NABLA_WITH_MPI
  /* one test drives Open MPI's whole progress engine; the others are
   * tested too so finished ones stop costing anything */
  for (int i = 0; d && d->mpi && i < d->n_pending; i++) {
    if (d->pending[i].req == MPI_REQUEST_NULL) continue;
    int done = 0;
    MPI_Test(&d->pending[i].req, &done, MPI_STATUS_IGNORE);
  }
#else
  (void)d;
#endif
}

/* ---- the table the layers below see (src/core/collective.h) ------------------- */

static nb_status coll_start(void *ctx, float *buf, int64_t count) {
  return nb_dist_iallreduce_start(ctx, buf, count);
}
static nb_status coll_wait(void *ctx, float *buf) { return nb_dist_iallreduce_wait(ctx, buf); }
static int coll_pending(const void *ctx) { return nb_dist_pending(ctx); }
static void coll_progress(void *ctx) { nb_dist_progress(ctx); }
static nb_status coll_drain(void *ctx) { return nb_dist_drain(ctx); }
static nb_status coll_agree(void *ctx, nb_status st) { return nb_dist_agree(ctx, st); }
static nb_status coll_broadcast(void *ctx, void *buf, size_t bytes, int root) {
  return nb_dist_broadcast(ctx, buf, bytes, root);
}

/* after open_mpi: rank and size are final */
static void fill_collective(nb_dist *d) {
  d->coll = (nb_collective){.ctx = d,
                            .rank = d->rank,
                            .size = d->size,
                            .iallreduce_start = coll_start,
                            .iallreduce_wait = coll_wait,
                            .pending = coll_pending,
                            .progress = coll_progress,
                            .drain = coll_drain,
                            .agree = coll_agree,
                            .broadcast = coll_broadcast};
}

const nb_collective *nb_dist_collective(nb_dist *d) { return d ? &d->coll : NULL; }
