/* nabla data-parallel training over processes: a communicator (MPI when the
 * build has it and a launcher such as mpirun started the process, else one
 * process on its own), collectives on host buffers, and the graph ops that
 * average gradients inside a compiled training step.
 *
 * Every rank runs the same program on its own slice of each batch; the
 * gradients are averaged across ranks between backward and the optimizer,
 * so every rank applies the same update and the weights stay identical.
 * docs/distributed.md describes running it (mpirun, hostfiles, what rank 0
 * writes, the determinism guarantee).
 *
 * Collectives must be called by every rank of the communicator in the same
 * order. A rank that fails on its own while the others wait in a collective
 * would leave them waiting: call nb_dist_abort(), which ends the whole job. */
#ifndef NABLA_DIST_H
#define NABLA_DIST_H

#include "graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_dist nb_dist;

typedef enum nb_dist_mode {
  NB_DIST_AUTO = 0, /* MPI when a launcher started this process (nb_dist_launched), else SINGLE */
  NB_DIST_MPI,      /* MPI; an error when the build lacks MPI or no launcher started us */
  NB_DIST_SINGLE,   /* one process (rank 0 of 1), no MPI calls at all */
  /* one process (rank 0 of 1) that still averages gradients through the
   * allreduce ops (nb_dist_averages_grads): the data-parallel code path, on
   * CUDA NCCL's, run and tested without MPI or a launcher; an error when a
   * launcher started several processes */
  NB_DIST_SELF,
} nb_dist_mode;

typedef enum nb_dist_op { NB_DIST_SUM = 0, NB_DIST_MIN, NB_DIST_MAX } nb_dist_op;

/* 1 if this build has MPI (CMake NABLA_MPI found it). */
int nb_dist_mpi_built(void);
/* 1 if the environment says an MPI launcher started this process: Open
 * MPI's OMPI_COMM_WORLD_SIZE, PMIx's PMIX_RANK, or PMI's PMI_SIZE/PMI_RANK
 * (MPICH's Hydra, Slurm's srun --mpi=pmi2). */
int nb_dist_launched(void);

/* Opens the communicator of all processes of the job. With MPI this calls
 * MPI_Init_thread (MPI_THREAD_FUNNELED: only the thread that runs plans
 * calls MPI) unless the program already initialised MPI, and duplicates
 * MPI_COMM_WORLD with MPI_ERRORS_RETURN, so failed MPI calls come back as
 * errors with MPI's message. MPI can be initialised once per process: the
 * last nb_dist_free() finalises it, and a later NB_DIST_MPI init fails. */
nb_status nb_dist_init(nb_dist_mode mode, nb_dist **out);
/* Frees the communicator (MPI_Finalize with the last one, when nb_dist_init
 * initialised MPI). Waits for nothing: call only when no collective is under
 * way. NULL is ignored. */
void nb_dist_free(nb_dist *d);

int nb_dist_rank(const nb_dist *d); /* 0 for NULL */
int nb_dist_size(const nb_dist *d); /* 1 for NULL */
/* "mpi", "single" or "self" (NB_DIST_SELF). */
const char *nb_dist_kind(const nb_dist *d);
/* 1 if a training step on d averages its gradients over the ranks
 * (nb_dist_average_grads, as nb_recipe_update_dist does): with more than
 * one rank, or in NB_DIST_SELF mode. 0 for NULL. */
int nb_dist_averages_grads(const nb_dist *d);

/* ---- collectives (every rank calls them, in the same order) ---------------- */

nb_status nb_dist_barrier(nb_dist *d);
/* In-place reduction of `count` elements of dtype f32, i32 or i64 over all
 * ranks; every rank receives the same result. */
nb_status nb_dist_allreduce(nb_dist *d, void *buf, int64_t count, nb_dtype dt, nb_dist_op op);
/* The same for doubles (host-side statistics such as summed losses). */
nb_status nb_dist_allreduce_f64(nb_dist *d, double *buf, int64_t count, nb_dist_op op);
/* Copies `bytes` bytes of rank `root`'s buf into every other rank's buf. */
nb_status nb_dist_broadcast(nb_dist *d, void *buf, size_t bytes, int root);

/* Checks that every rank holds the same n values (configuration that must
 * agree: batch size, seed, a checksum of the model graph). Returns NB_OK
 * when all agree; otherwise every rank gets the same NB_ERR_STATE error
 * naming the first differing value with its smallest and largest value
 * across ranks, and nb_dist_failed_together() becomes 1 on every rank. */
nb_status nb_dist_check_same(nb_dist *d, int n, const char *const *names, const int64_t *values);
/* 1 after an error that every rank returned at the same point (a failed
 * nb_dist_check_same): the ranks can exit normally. 0 otherwise: a failed
 * rank must call nb_dist_abort(), or the others may wait for it forever. */
int nb_dist_failed_together(const nb_dist *d);
/* Records that every rank agreed on a failure (see above); for callers
 * that agree through a collective of their own (a broadcast status). */
void nb_dist_set_failed_together(nb_dist *d);

/* Turns a failure of some ranks into a failure of all (a collective):
 * returns st where it failed and an error naming the first failed rank
 * elsewhere, and then marks every rank failed_together. NB_OK when no rank
 * failed. Call it after work that can fail on one rank alone (reading a
 * file, writing a checkpoint) and before the next collective. */
nb_status nb_dist_agree(nb_dist *d, nb_status st);

/* Prints "nabla: rank R of N: message" to stderr (nothing when message is
 * NULL) and ends every process of the job with exit code `code`
 * (MPI_Abort). With one process it returns (the caller exits as usual). */
void nb_dist_abort(nb_dist *d, int code, const char *message);

/* ---- non-blocking gradient reduction (used by the graph ops below) ---------- */

/* Starts summing `count` f32 at buf over all ranks in place
 * (MPI_Iallreduce). buf must stay untouched until nb_dist_iallreduce_wait()
 * with the same buf returns. At most one reduction per buffer is pending. */
nb_status nb_dist_iallreduce_start(nb_dist *d, float *buf, int64_t count);
/* Waits for the reduction started on buf. */
nb_status nb_dist_iallreduce_wait(nb_dist *d, float *buf);
/* Number of reductions started and not yet waited for. */
int nb_dist_pending(const nb_dist *d);
/* Lets MPI advance pending reductions (MPI_Test): Open MPI moves a
 * non-blocking collective forward only inside MPI calls, so the plan
 * executor calls this between kernels while reductions are pending. */
void nb_dist_progress(nb_dist *d);

/* ---- graph ops -------------------------------------------------------------- */

/* Appends the mean over all ranks of d of the n f32 tensors xs (one bucket):
 * an allreduce_start node packs them into one flat buffer and starts a
 * non-blocking sum as soon as its inputs are computed (the compiler moves it
 * right after the last of them), and an allreduce_wait node, launched just
 * before the first kernel that reads a result, waits and scales by 1/size.
 * outs[i] (shaped like xs[i]) are views of the waited buffer. With one rank
 * the result equals the input. The plans compiled from g use d: it must
 * outlive them. Errors are also recorded in the graph. */
nb_status nb_allreduce_mean(nb_graph *g, nb_dist *d, int n, nb_tensor *const *xs, nb_tensor **outs);

/* The NCCL that the CUDA backend's gradient reductions use. nabla does not
 * link NCCL: it loads it with dlopen (NABLA_NCCL_LIBRARY when set, else
 * libnccl.so.2 wherever the dynamic loader finds it) the first time it is
 * needed, and keeps it. Writes "2.28.9 (libnccl.so.2)" into buf (loading it
 * now if needed) and returns NB_OK, or returns NB_ERR_UNSUPPORTED with a
 * message saying how to install NCCL or point at it. */
nb_status nb_dist_nccl_version(char *buf, size_t cap);

/* Default bucket size of nb_dist_average_grads: 1 MiB of gradients, or
 * NABLA_DIST_BUCKET_KB kibibytes when that environment variable is set. */
size_t nb_dist_default_bucket_bytes(void);

/* Replaces the gradient of every variable that requires grad (after
 * nb_graph_backward, before clipping and the optimizer) with its mean over
 * the ranks of d, like PyTorch's DistributedDataParallel. Gradients are
 * grouped in the order backward finishes them into buckets of at most
 * bucket_bytes (0: nb_dist_default_bucket_bytes; a larger gradient gets a
 * bucket of its own), one nb_allreduce_mean each, so a bucket's reduction
 * runs while backward computes the next ones. Gradients must be f32.
 * *n_buckets (may be NULL) receives the number of buckets. */
nb_status nb_dist_average_grads(nb_graph *g, nb_dist *d, size_t bucket_bytes, int *n_buckets);

#ifdef __cplusplus
}
#endif

#endif
