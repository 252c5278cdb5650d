/* Opening devices by name. */
#include <stdlib.h>
#include <string.h>

#include "backend_internal.h"

nb_status nb_backend_new(const char *device, nb_backend **out) {
  if (!device || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_backend_new: NULL argument");
  *out = NULL;
  const char *colon = strchr(device, ':');
  size_t kind_len = colon ? (size_t)(colon - device) : strlen(device);
  int index = 0;
  if (colon) {
    char *end;
    long v = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || v < 0 || v > 1024)
      return nb_error(NB_ERR_INVALID_ARG, "device '%s': expected KIND or KIND:INDEX, e.g. cpu:0",
                      device);
    index = (int)v;
  }
  if (kind_len == 3 && !strncmp(device, "cpu", 3)) {
    /* the host is one device; "cpu:3" used to open a phantom cpu:3 */
    if (index != 0)
      return nb_error(NB_ERR_INVALID_ARG, "device '%s': the CPU backend has only device cpu:0",
                      device);
    return nb_cpu_backend_open(index, out);
  }
#ifdef NABLA_WITH_CUDA
  if (kind_len == 4 && !strncmp(device, "cuda", 4)) return nb_cuda_backend_open(index, out);
#endif
  if (kind_len == 4 && !strncmp(device, "cuda", 4))
    return nb_error(NB_ERR_UNSUPPORTED,
                    "device '%s': this build of nabla has no CUDA backend (rebuild with "
                    "-DNABLA_CUDA=ON on a machine with the CUDA toolkit)",
                    device);
  return nb_error(NB_ERR_INVALID_ARG, "unknown device '%s' (expected cpu or cuda:N)", device);
}

void nb_backend_free(nb_backend *be) {
  if (be && be->vt && be->vt->destroy) be->vt->destroy(be);
}

const char *nb_backend_name(const nb_backend *be) { return be ? be->name : ""; }

int nb_backend_supports_op(nb_backend *be, const char *op) {
  if (!be || !op) return 0;
  for (int i = 0; i < NB_OP_COUNT; i++) {
    if (strcmp(nb_op_def_get((nb_opcode)i)->name, op)) continue;
    nb_tensor probe = {0};
    probe.op = (nb_opcode)i;
    int ok = be->vt->supports(be, &probe) == NB_OK;
    nb_clear_error();
    return ok;
  }
  return 0;
}

int nb_backend_kind_supports_op(const char *kind, const char *op) {
  if (!kind || !op) return 0;
  int cpu = !strcmp(kind, "cpu"), cuda = !strcmp(kind, "cuda");
  if (!cpu && !cuda) return 0;
  for (int i = 0; i < NB_OP_COUNT; i++) {
    const nb_op_def *d = nb_op_def_get((nb_opcode)i);
    if (strcmp(d->name, op)) continue;
    /* leaves and views are storage, not kernels */
    if (d->fusion == NB_FUSE_LEAF || d->fusion == NB_FUSE_VIEW) return 1;
    if (cuda) {
      /* a CUDA build asks its kernel table; others the list that mirrors it */
#ifdef NABLA_WITH_CUDA
      return nb_cuda_has_kernel((nb_opcode)i);
#else
      return nb_cuda_lists_op((nb_opcode)i);
#endif
    }
    /* the CPU backend is the host: opening it costs nothing */
    nb_backend *be = NULL;
    if (nb_cpu_backend_open(0, &be)) {
      nb_clear_error();
      return 0;
    }
    int ok = nb_backend_supports_op(be, op);
    nb_backend_free(be);
    return ok;
  }
  return 0;
}

nb_status nb_backend_memory_stats(nb_backend *be, nb_memory_stats *out) {
  if (!be || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_backend_memory_stats: NULL argument");
  memset(out, 0, sizeof *out);
  if (!be->vt->memory_stats)
    return nb_error(NB_ERR_UNSUPPORTED, "%s: no allocator statistics (host memory)", be->name);
  return be->vt->memory_stats(be, out);
}
