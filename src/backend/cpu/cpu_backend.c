/* The CPU backend: host memory, OpenMP threads, and a kernel per opcode. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_internal.h"

void openblas_set_num_threads(int num_threads); /* from OpenBLAS's cblas.h */

static nb_cpu_kernel_entry kernels[NB_OP_COUNT];
static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;
static int num_threads; /* 0 = default; the one documented global */

static void build_kernels(void) {
  nb_cpu_register_elementwise(kernels);
  nb_cpu_register_copy(kernels);
  nb_cpu_register_reduce(kernels);
  nb_cpu_register_matmul(kernels);
  nb_cpu_register_conv(kernels);
  nb_cpu_register_pool(kernels);
  nb_cpu_register_softmax(kernels);
  nb_cpu_register_movement(kernels);
  nb_cpu_register_attention(kernels);
  nb_cpu_register_dist(kernels);
  nb_cpu_register_decode(kernels);
  nb_cpu_register_half(kernels); /* wraps matmul and conv: last */
}

/* OMP_NUM_THREADS when set (its first number, as OpenMP reads "4,2"),
 * else every core: what users of PyTorch or numpy expect the variable to
 * do, and how one caps a process that shares the machine. */
static int default_threads(void) {
#ifdef _OPENMP
  const char *env = getenv("OMP_NUM_THREADS");
  long n = env ? strtol(env, NULL, 10) : 0;
  if (n > 0) return n < 1024 ? (int)n : 1024;
  return omp_get_num_procs();
#else
  return 1;
#endif
}

void nb_set_num_threads(int n) {
  num_threads = n > 0 ? n : 0;
  int t = nb_cpu_threads();
#ifdef _OPENMP
  omp_set_num_threads(t);
#endif
  openblas_set_num_threads(t);
}

int nb_get_num_threads(void) { return nb_cpu_threads(); }

int nb_cpu_threads(void) {
  int own = nb_cpu_thread_override(); /* a logical device's own count */
  if (own > 0) return own;
  return num_threads > 0 ? num_threads : default_threads();
}

int nb_cpu_max_threads(void) {
  int t = nb_cpu_threads(), d = default_threads();
  return t > d ? t : d;
}

static nb_status cpu_alloc(nb_backend *be, size_t bytes, void **out) {
  (void)be;
  size_t n = (bytes + 63u) & ~(size_t)63u;
  *out = aligned_alloc(64, n ? n : 64);
  if (!*out) return nb_error(NB_ERR_OOM, "cpu: cannot allocate %zu bytes", bytes);
  memset(*out, 0, n ? n : 64);
  return NB_OK;
}

static void cpu_free(nb_backend *be, void *p) {
  (void)be;
  free(p);
}

static nb_status cpu_copy(nb_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memmove(dst, src, bytes);
  return NB_OK;
}

static nb_status cpu_supports(nb_backend *be, const nb_tensor *node) {
  (void)be;
  pthread_once(&kernels_once, build_kernels);
  if (!kernels[node->op].run)
    return nb_error(NB_ERR_UNSUPPORTED, "no CPU kernel for op %s", nb_op_def_get(node->op)->name);
  return NB_OK;
}

static size_t cpu_workspace(nb_backend *be, const nb_tensor *node) {
  pthread_once(&kernels_once, build_kernels);
  int prev = nb_cpu_scope_enter(be); /* per-thread scratch sized for this device */
  size_t n = kernels[node->op].workspace ? kernels[node->op].workspace(node) : 0;
  nb_cpu_scope_leave(prev);
  return n;
}

static int cpu_fuses_epilogue(nb_backend *be, const nb_tensor *node) {
  (void)be;
  pthread_once(&kernels_once, build_kernels);
  return kernels[node->op].epilogue && !nb_cpu_has_half_input(node);
}

static nb_status cpu_run(nb_backend *be, const nb_kernel_call *c) {
  int prev = nb_cpu_scope_enter(be); /* a logical device's own thread count */
  nb_status st = kernels[c->node->op].run(c);
  nb_cpu_scope_leave(prev);
  return st;
}

/* The run counter lives in host memory: kernels run in order on the
 * calling thread, so a plain increment is ordered after them. */
static nb_status cpu_count(nb_backend *be, uint64_t *counter) {
  (void)be;
  (*counter)++;
  return NB_OK;
}

static void cpu_destroy(nb_backend *be) { free(be); }

static const nb_backend_vtable cpu_vtable = {
    .kind = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .supports = cpu_supports,
    .workspace = cpu_workspace,
    .fuses_epilogue = cpu_fuses_epilogue,
    .run = cpu_run,
    .destroy = cpu_destroy,
    .bind_thread = nb_cpu_bind_thread,
    .count = cpu_count,
};

nb_status nb_cpu_backend_open(int index, nb_backend **out) {
  nb_backend *be = calloc(1, sizeof *be);
  if (!be) return nb_error(NB_ERR_OOM, "cpu backend: out of memory");
  be->vt = &cpu_vtable;
  be->index = index;
  snprintf(be->name, sizeof be->name, "cpu:%d", index);
  pthread_once(&kernels_once, build_kernels);
  *out = be;
  return NB_OK;
}
