/* NCCL loaded at run time (dlopen), so that nabla builds without NCCL's
 * headers or library and a machine without NCCL still runs everything
 * except the GPU gradient reduction. Internal to nabla: the CUDA backend's
 * allreduce kernels (src/backend/cuda/cuda_nccl.cu) and the tests use it.
 *
 * The few NCCL types and constants used are declared here, with the values
 * of NCCL's public header, src/nccl.h.in in github.com/NVIDIA/nccl (read at
 * commit 021e8045ff77a8a9fba909617a0129d3c3d44def, and identical in 2.28.9's
 * installed nccl.h): NCCL_UNIQUE_ID_BYTES 128 and
 * `typedef struct { char internal[NCCL_UNIQUE_ID_BYTES]; } ncclUniqueId;`,
 * `typedef struct ncclComm* ncclComm_t;`, ncclResult_t ncclSuccess = 0,
 * ncclRedOp_t ncclSum = 0 (ncclAvg = 4, from 2.10), ncclDataType_t
 * ncclFloat32 = 7. Those enums are int-sized (ncclMaxRedOp is 0x7fffffff),
 * so they are passed as int; a cudaStream_t is a pointer, passed as void *.
 * NCCL keeps these values fixed across 2.x: they are its ABI. */
#ifndef NB_NCCL_API_H
#define NB_NCCL_API_H

#include <stddef.h>

#include "nabla/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NB_NCCL_UNIQUE_ID_BYTES 128
typedef struct nb_nccl_unique_id {
  char internal[NB_NCCL_UNIQUE_ID_BYTES];
} nb_nccl_unique_id;
typedef struct nb_nccl_comm_s *nb_nccl_comm; /* ncclComm_t */
typedef int nb_nccl_result;                  /* ncclResult_t */

enum {
  NB_NCCL_SUCCESS = 0, /* ncclSuccess */
  NB_NCCL_SUM = 0,     /* ncclSum */
  NB_NCCL_FLOAT32 = 7, /* ncclFloat32 */
};

/* The NCCL functions nabla calls, resolved from the loaded library. */
typedef struct nb_nccl_api {
  void *handle;   /* dlopen handle (never closed once loaded: NCCL keeps threads) */
  char path[512]; /* what was opened: NABLA_NCCL_LIBRARY, or the soname searched */
  int version;    /* ncclGetVersion, e.g. 22809 for 2.28.9 */
  nb_nccl_result (*get_version)(int *version);
  nb_nccl_result (*get_unique_id)(nb_nccl_unique_id *id);
  nb_nccl_result (*comm_init_rank)(nb_nccl_comm *comm, int nranks, nb_nccl_unique_id id, int rank);
  nb_nccl_result (*comm_destroy)(nb_nccl_comm comm);
  nb_nccl_result (*comm_abort)(nb_nccl_comm comm);
  nb_nccl_result (*comm_get_async_error)(nb_nccl_comm comm, nb_nccl_result *error);
  nb_nccl_result (*all_reduce)(const void *send, void *recv, size_t count, int dtype, int op,
                               nb_nccl_comm comm, void *stream);
  const char *(*get_error_string)(nb_nccl_result result);
  /* NULL before NCCL 2.13 */
  const char *(*get_last_error)(nb_nccl_comm comm);
} nb_nccl_api;

/* Opens the NCCL library at `path` (NULL: the soname libnccl.so.2, then
 * libnccl.so, searched like any library: LD_LIBRARY_PATH, the ld.so cache)
 * and resolves the functions above into *api. On failure *api is cleared
 * and the error says what was tried and how to fix it. The caller owns
 * api->handle (nb_nccl_close). */
nb_status nb_nccl_open(const char *path, nb_nccl_api *api);
/* dlclose of a table from nb_nccl_open; for tests (a loaded NCCL that ran
 * a communicator must stay loaded). */
void nb_nccl_close(nb_nccl_api *api);

/* The process-wide NCCL: opened on the first call from NABLA_NCCL_LIBRARY
 * when set, else by soname, and kept for the life of the process (global
 * state, like the library itself). A failure is not remembered, so a later
 * call tries again. Thread-safe. */
nb_status nb_nccl_get(const nb_nccl_api **out);

/* "2.28.9" from a version code (both encodings NCCL has used). */
void nb_nccl_version_string(int version, char *buf, size_t cap);

/* An error for a failed NCCL call: "<what>: <NCCL's string for rc>" plus
 * ncclGetLastError's detail when the library has it. `what` is printf-style. */
nb_status nb_nccl_error(const nb_nccl_api *api, nb_nccl_result rc, nb_nccl_comm comm,
                        const char *what, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#ifdef __cplusplus
}
#endif

#endif
