/* Logical CPU devices: the thread count and cores of one device's kernels.
 *
 * Kernels size their parallel loops with nb_cpu_threads(). A thread-local
 * override lets one device use its own count without touching the
 * process-wide setting: a multi-device plan's worker thread sets it once
 * (nb_cpu_bind_thread), and a kernel run on the caller's thread for a device
 * with its own count sets it around the call (nb_cpu_scope_*). OpenBLAS's
 * OpenMP build sizes each call by omp_get_max_threads() of the calling
 * thread, so the same count goes to omp_set_num_threads, which is per
 * thread too. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_internal.h"

static _Thread_local int tls_threads; /* 0 = no override */

int nb_cpu_thread_override(void) { return tls_threads; }

int nb_cpu_core_count(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

static void set_threads(int n) {
  tls_threads = n;
#ifdef _OPENMP
  if (n > 0) omp_set_num_threads(n);
#endif
}

int nb_cpu_scope_enter(const nb_backend *be) {
  if (be->threads <= 0 || be->threads == tls_threads) return -1;
  int prev = tls_threads;
#ifdef _OPENMP
  /* what this thread's OpenMP regions got before: restored on leave */
  if (!prev) prev = -2 - omp_get_max_threads();
#endif
  set_threads(be->threads);
  return prev;
}

void nb_cpu_scope_leave(int prev) {
  if (prev == -1) return;
  if (prev <= -2) {
    tls_threads = 0;
#ifdef _OPENMP
    omp_set_num_threads(-2 - prev);
#endif
    return;
  }
  set_threads(prev);
}

void nb_cpu_bind_thread(nb_backend *be, int share) {
  int n = be->threads > 0 ? be->threads : share;
  if (n > 0) set_threads(n);
  if (be->cpu_count > 0) {
    /* OpenMP's workers are created by this thread on its first parallel
     * region and inherit its mask */
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c = be->cpu_first; c < be->cpu_first + be->cpu_count && c < CPU_SETSIZE; c++)
      CPU_SET(c, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  }
}
