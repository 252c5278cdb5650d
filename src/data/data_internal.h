/* Helpers shared by the dataset readers; not part of the public API. */
#ifndef NB_DATA_INTERNAL_H
#define NB_DATA_INTERNAL_H

#include <stddef.h>

#include "nabla/data.h"

/* Longest path the readers build; longer ones are an error, not a silent
 * truncation that would open some other file. */
#define NB_DATA_PATH_MAX 4096

/* out = a + "/" + b; NB_ERR_INVALID_ARG naming both parts if it does not fit. */
nb_status nb_data_join(char *out, size_t cap, const char *a, const char *b);
/* 1 if path names a regular file (following links), else 0. */
int nb_data_is_file(const char *path);
/* 1 if path names a directory (following links), else 0. */
int nb_data_is_dir(const char *path);

#endif
