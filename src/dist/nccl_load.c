/* Loading NCCL with dlopen (nccl_api.h). Plain C with no CUDA, so that it is
 * built and tested everywhere; only the CUDA backend calls the functions. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/dist.h"
#include "nccl_api.h"

/* name, where it goes in nb_nccl_api, and whether a library without it is
 * refused (every required one is in NCCL since 2.4, 2019) */
typedef struct sym {
  const char *name;
  size_t offset;
  int required;
} sym;

static const sym symbols[] = {
    {"ncclGetVersion", offsetof(nb_nccl_api, get_version), 1},
    {"ncclGetUniqueId", offsetof(nb_nccl_api, get_unique_id), 1},
    {"ncclCommInitRank", offsetof(nb_nccl_api, comm_init_rank), 1},
    {"ncclCommDestroy", offsetof(nb_nccl_api, comm_destroy), 1},
    {"ncclCommAbort", offsetof(nb_nccl_api, comm_abort), 1},
    {"ncclCommGetAsyncError", offsetof(nb_nccl_api, comm_get_async_error), 1},
    {"ncclAllReduce", offsetof(nb_nccl_api, all_reduce), 1},
    {"ncclGetErrorString", offsetof(nb_nccl_api, get_error_string), 1},
    {"ncclGetLastError", offsetof(nb_nccl_api, get_last_error), 0},
};

#define HOW_TO_FIX                                                                                 \
  "install NCCL (Debian/Ubuntu: libnccl2; pip: nvidia-nccl-cu13 or -cu12) and put the folder "     \
  "of libnccl.so.2 on LD_LIBRARY_PATH, or set NABLA_NCCL_LIBRARY=/path/to/libnccl.so.2"

void nb_nccl_version_string(int v, char *buf, size_t cap) {
  /* NCCL_VERSION(X,Y,Z): X*1000 + Y*100 + Z up to 2.8, X*10000 + Y*100 + Z after */
  int major = v >= 10000 ? v / 10000 : v / 1000;
  int minor = v >= 10000 ? v / 100 % 100 : v / 100 % 10;
  snprintf(buf, cap, "%d.%d.%d", major, minor, v % 100);
}

void nb_nccl_close(nb_nccl_api *api) {
  if (!api) return;
  if (api->handle) dlclose(api->handle);
  memset(api, 0, sizeof *api);
}

nb_status nb_nccl_open(const char *path, nb_nccl_api *api) {
  if (!api) return nb_error(NB_ERR_INVALID_ARG, "nb_nccl_open: api is NULL");
  memset(api, 0, sizeof *api);
  static const char *const sonames[] = {"libnccl.so.2", "libnccl.so"};
  char tried[1024] = "";
  if (path && *path) {
    api->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!api->handle) {
      const char *why = dlerror();
      return nb_error(NB_ERR_UNSUPPORTED,
                      "NCCL not found: NABLA_NCCL_LIBRARY=%s cannot be loaded (%s); point it at "
                      "libnccl.so.2, or unset it to search LD_LIBRARY_PATH",
                      path, why ? why : "dlopen failed");
    }
    snprintf(api->path, sizeof api->path, "%s", path);
  } else {
    for (size_t i = 0; i < sizeof sonames / sizeof sonames[0] && !api->handle; i++) {
      api->handle = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
      if (api->handle) {
        snprintf(api->path, sizeof api->path, "%s", sonames[i]);
      } else if (i == 0) {
        const char *why = dlerror(); /* the soname's reason is the telling one */
        snprintf(tried, sizeof tried, "%s", why ? why : "dlopen failed");
      }
    }
    if (!api->handle)
      return nb_error(NB_ERR_UNSUPPORTED, "NCCL not found (%s): %s", tried, HOW_TO_FIX);
  }
  for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
    dlerror();
    void *f = dlsym(api->handle, symbols[i].name);
    if (!f && symbols[i].required) {
      char where[sizeof api->path];
      snprintf(where, sizeof where, "%s", api->path);
      nb_nccl_close(api);
      return nb_error(NB_ERR_UNSUPPORTED,
                      "%s is not a usable NCCL: it has no %s (NCCL 2.4 or later needed); %s", where,
                      symbols[i].name, HOW_TO_FIX);
    }
    /* a function pointer stored through its object representation: the
     * POSIX way to take one from dlsym */
    memcpy((char *)api + symbols[i].offset, &f, sizeof f);
  }
  nb_nccl_result rc = api->get_version(&api->version);
  if (rc != NB_NCCL_SUCCESS) {
    nb_status st = nb_nccl_error(api, rc, NULL, "%s: ncclGetVersion", api->path);
    nb_nccl_close(api);
    return st;
  }
  return NB_OK;
}

nb_status nb_nccl_error(const nb_nccl_api *api, nb_nccl_result rc, nb_nccl_comm comm,
                        const char *what, ...) {
  char head[512];
  va_list ap;
  va_start(ap, what);
  vsnprintf(head, sizeof head, what, ap);
  va_end(ap);
  const char *str = api && api->get_error_string ? api->get_error_string(rc) : NULL;
  const char *last = api && api->get_last_error ? api->get_last_error(comm) : NULL;
  /* ncclInvalidArgument, ncclInvalidUsage (two ranks on one GPU, say);
   * ncclSystemError, ncclRemoteError, ncclTimeout (the network, a peer) */
  nb_status st = rc == 4 || rc == 5              ? NB_ERR_INVALID_ARG
                 : rc == 2 || rc == 6 || rc == 8 ? NB_ERR_IO
                                                 : NB_ERR_INTERNAL;
  return nb_error(st, "%s failed: NCCL error %d: %s%s%s", head, rc, str ? str : "unknown",
                  last && *last ? "; " : "", last && *last ? last : "");
}

/* ---- the process-wide library ---------------------------------------------- */

static pthread_mutex_t lib_lock = PTHREAD_MUTEX_INITIALIZER;
static nb_nccl_api lib;
static int lib_loaded;

nb_status nb_dist_nccl_version(char *buf, size_t cap) {
  if (!buf || !cap) return nb_error(NB_ERR_INVALID_ARG, "nb_dist_nccl_version: no buffer");
  buf[0] = '\0';
  const nb_nccl_api *api = NULL;
  nb_status st = nb_nccl_get(&api);
  if (st) return st;
  char v[32];
  nb_nccl_version_string(api->version, v, sizeof v);
  snprintf(buf, cap, "%s (%s)", v, api->path);
  return NB_OK;
}

nb_status nb_nccl_get(const nb_nccl_api **out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_nccl_get: out is NULL");
  *out = NULL;
  pthread_mutex_lock(&lib_lock);
  nb_status st = NB_OK;
  if (!lib_loaded) {
    st = nb_nccl_open(getenv("NABLA_NCCL_LIBRARY"), &lib);
    lib_loaded = st == NB_OK;
  }
  pthread_mutex_unlock(&lib_lock);
  if (!st) *out = &lib;
  return st;
}
