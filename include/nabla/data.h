/* nabla data loading: dataset readers. */
#ifndef NABLA_DATA_H
#define NABLA_DATA_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An IDX array (the MNIST / Fashion-MNIST file format), plain or gzipped. */
typedef struct nb_idx {
  nb_dtype dtype; /* u8, i32 or f32 (IDX i8/i16/f64 are converted to i32/f32) */
  int ndim;
  int64_t shape[NB_MAX_DIMS];
  void *data; /* numel * dtype size bytes, owned by the struct */
} nb_idx;

/* Reads `path` (".gz" or not, detected from the gzip magic). A missing,
 * corrupt or truncated file is an error naming the file and the byte
 * offset where it went wrong. */
nb_status nb_idx_load(const char *path, nb_idx *out);
void nb_idx_free(nb_idx *idx);

#ifdef __cplusplus
}
#endif

#endif
