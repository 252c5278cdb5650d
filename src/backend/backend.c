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
    /* logical devices of the one host (model parallelism without a GPU) */
    if (index >= NB_CPU_MAX_DEVICES)
      return nb_error(NB_ERR_INVALID_ARG, "device '%s': logical CPU devices are cpu:0 to cpu:%d",
                      device, NB_CPU_MAX_DEVICES - 1);
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

static int is_cpu(const nb_backend *be) { return !strcmp(be->vt->kind, "cpu"); }

nb_status nb_backend_set_threads(nb_backend *be, int n) {
  if (!be) return nb_error(NB_ERR_INVALID_ARG, "nb_backend_set_threads: backend is NULL");
  if (!is_cpu(be))
    return nb_error(NB_ERR_UNSUPPORTED, "%s: only CPU devices take a thread count", be->name);
  be->threads = n > 0 ? n : 0;
  return NB_OK;
}

int nb_backend_threads(const nb_backend *be) { return be ? be->threads : 0; }

nb_status nb_backend_set_cpus(nb_backend *be, int first, int count) {
  if (!be) return nb_error(NB_ERR_INVALID_ARG, "nb_backend_set_cpus: backend is NULL");
  if (!is_cpu(be))
    return nb_error(NB_ERR_UNSUPPORTED, "%s: only CPU devices are pinned to cores", be->name);
  int cores = nb_cpu_core_count();
  if (count < 0 || first < 0 || (count > 0 && (first >= cores || count > cores - first)))
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: cores [%d, %d) are not all among the %d cores this process may use",
                    be->name, first, first + count, cores);
  be->cpu_first = count ? first : 0;
  be->cpu_count = count;
  return NB_OK;
}

nb_status nb_backend_copy(nb_backend *db, void *dst, nb_backend *sb, const void *src,
                          size_t bytes) {
  if (!bytes) return NB_OK;
  if (is_cpu(sb)) return db->vt->upload(db, dst, src, bytes);
  if (is_cpu(db)) return sb->vt->download(sb, dst, src, bytes);
  /* device to device through the host: correct everywhere, fast nowhere */
  void *tmp = malloc(bytes);
  if (!tmp) return nb_error(NB_ERR_OOM, "transfer %s -> %s: out of memory", sb->name, db->name);
  nb_status st = sb->vt->download(sb, tmp, src, bytes);
  if (!st) st = db->vt->upload(db, dst, tmp, bytes);
  free(tmp);
  return st;
}
