/* Decoded ONNX messages, shared by the reader (onnx_proto.c) and the graph
 * builder (onnx_import.c). Everything a model holds lives in one arena freed
 * with the model, so decoders can bail out anywhere without leaking. */
#ifndef NB_ONNX_INTERNAL_H
#define NB_ONNX_INTERNAL_H

#include "nabla/onnx.h"

typedef struct ox_arena ox_arena;

ox_arena *ox_arena_new(void);
void ox_arena_free(ox_arena *a);
/* Zeroed memory owned by the arena; NULL when out of memory. */
void *ox_alloc(ox_arena *a, size_t n);

/* AttributeProto.AttributeType values we read. */
enum {
  OX_ATTR_FLOAT = 1,
  OX_ATTR_INT = 2,
  OX_ATTR_STRING = 3,
  OX_ATTR_TENSOR = 4,
  OX_ATTR_GRAPH = 5,
  OX_ATTR_FLOATS = 6,
  OX_ATTR_INTS = 7,
  OX_ATTR_STRINGS = 8,
};

typedef struct ox_attr {
  const char *name;
  int type;
  float f;
  int64_t i;
  const char *s; /* NUL-terminated copy */
  nb_onnx_tensor *t;
  int nfloats, nints, nstrings;
  float *floats;
  int64_t *ints;
} ox_attr;

typedef struct ox_node {
  const char *name, *op_type, *domain;
  int nin, nout, nattr;
  const char **in, **out;
  ox_attr *attr;
} ox_node;

typedef struct ox_value_info {
  const char *name;
  int elem_type; /* 0 when not a tensor type */
  int ndim;      /* -1: no shape given */
  int64_t dims[NB_MAX_DIMS];
} ox_value_info;

typedef struct ox_opset {
  const char *domain;
  int64_t version;
} ox_opset;

struct nb_onnx_model {
  ox_arena *arena;
  const char *path;
  int64_t ir_version;
  int nopset, nnode, ninit, ninput, noutput;
  ox_opset *opset;
  ox_node *node;
  nb_onnx_tensor **init;
  ox_value_info *input; /* all graph inputs, initializers included */
  ox_value_info *output;
  int nfeed; /* inputs that are not initializers */
  int *feed; /* their indices into input */
};

/* Where a tensor with data_location = EXTERNAL keeps its bytes: the
 * external_data entries "location", "offset" and "length" (NULL if absent). */
typedef struct ox_external {
  const char *location, *offset, *length;
} ox_external;

/* Reads the `expect` bytes of an external tensor (onnx_external.c) into
 * arena memory. `location` is relative to the directory of `file` (the
 * model); absolute paths, ".." components and symlinks that leave that
 * directory are refused, and offset and length are checked against the
 * external file's size before anything is allocated. `base` and `tensor`
 * label errors. */
nb_status ox_read_external(ox_arena *a, const char *file, size_t base, const char *tensor,
                           const ox_external *ext, uint64_t expect, const uint8_t **data,
                           size_t *len);

/* Decodes a TensorProto payload into arena memory; `base` is its offset in
 * `file`. External data is read relative to file's directory. */
nb_status ox_decode_tensor(ox_arena *a, const uint8_t *buf, size_t len, size_t base,
                           const char *file, nb_onnx_tensor **out);

#endif
