/* CPU backend internals: the kernel table and helpers shared by kernels. */
#ifndef NB_CPU_INTERNAL_H
#define NB_CPU_INTERNAL_H

#include "../backend_internal.h"

typedef nb_status (*nb_cpu_kernel)(const nb_kernel_call *c);

typedef struct nb_cpu_kernel_entry {
  nb_cpu_kernel run;
  /* scratch bytes for a node; NULL = none */
  size_t (*workspace)(const nb_tensor *node);
} nb_cpu_kernel_entry;

/* Each kernel family fills its entries of the table (indexed by opcode). */
void nb_cpu_register_elementwise(nb_cpu_kernel_entry *t);
void nb_cpu_register_copy(nb_cpu_kernel_entry *t);
void nb_cpu_register_reduce(nb_cpu_kernel_entry *t);
void nb_cpu_register_matmul(nb_cpu_kernel_entry *t);
void nb_cpu_register_conv(nb_cpu_kernel_entry *t);
void nb_cpu_register_pool(nb_cpu_kernel_entry *t);
void nb_cpu_register_softmax(nb_cpu_kernel_entry *t);
void nb_cpu_register_movement(nb_cpu_kernel_entry *t);

/* Threads for our parallel loops (nb_set_num_threads). */
int nb_cpu_threads(void);

/* Walks the elements of a strided tensor in row-major order: the element
 * offset (in elements) of linear index `i` of shape/stride. */
static inline int64_t nb_strided_offset(int ndim, const int64_t *shape, const int64_t *stride,
                                        int64_t i) {
  int64_t off = 0;
  for (int d = ndim - 1; d >= 0; d--) {
    int64_t n = shape[d];
    if (n > 1) {
      off += (i % n) * stride[d];
      i /= n;
    }
  }
  return off;
}

#endif
