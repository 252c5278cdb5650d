/* A stand-in libnccl for test_nccl_load: the functions nabla resolves, with
 * NCCL's C signatures (src/dist/nccl_api.h), no GPU needed. Its
 * ncclAllReduce is a one-rank in-place reduction on host memory that
 * insists on nabla's arguments (in place, float32, sum), so the test checks
 * what goes through the table. Built twice: FAKE_NCCL_NO_ALLREDUCE leaves
 * ncclAllReduce out, a library nabla must refuse by name. */
#include <stddef.h>
#include <string.h>

typedef struct {
  char internal[128];
} fake_unique_id;

#define VISIBLE __attribute__((visibility("default")))

VISIBLE int ncclGetVersion(int *version) {
  *version = 22809; /* 2.28.9 */
  return 0;
}

VISIBLE int ncclGetUniqueId(fake_unique_id *id) {
  memset(id, 0x5a, sizeof *id);
  return 0;
}

static int comm_dummy;

VISIBLE int ncclCommInitRank(void **comm, int nranks, fake_unique_id id, int rank) {
  if (nranks != 1 || rank != 0 || id.internal[0] != 0x5a) return 4; /* ncclInvalidArgument */
  *comm = &comm_dummy;
  return 0;
}

VISIBLE int ncclCommDestroy(void *comm) { return comm == &comm_dummy ? 0 : 4; }
VISIBLE int ncclCommAbort(void *comm) { return comm == &comm_dummy ? 0 : 4; }

VISIBLE int ncclCommGetAsyncError(void *comm, int *error) {
  *error = 0;
  return comm == &comm_dummy ? 0 : 4;
}

#ifndef FAKE_NCCL_NO_ALLREDUCE
VISIBLE int ncclAllReduce(const void *send, void *recv, size_t count, int dtype, int op, void *comm,
                          void *stream) {
  (void)stream;
  (void)count;
  /* one rank: the sum is the buffer itself */
  return send == recv && dtype == 7 && op == 0 && comm == &comm_dummy ? 0 : 4;
}
#endif

VISIBLE const char *ncclGetErrorString(int result) {
  return result == 4 ? "invalid argument (fake)" : "fake error";
}

VISIBLE const char *ncclGetLastError(void *comm) {
  (void)comm;
  return "fake detail";
}
