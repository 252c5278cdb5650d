/* ONNX import: a small self-contained reader of ONNX model files (no
 * protobuf library), and a builder that maps ONNX operators onto nabla graph
 * ops. ONNX export (at the end): a protobuf writer, and nb_onnx_export,
 * which writes the inference part of a nabla graph as an ONNX model.
 *
 * Shapes are static in nabla, so a model is built for concrete input shapes
 * (a dynamic batch dimension is fixed at build time). Integer tensors that
 * act as shapes, axes or indices (initializers, Constant nodes, Shape
 * outputs, and inputs given with a value) are read at build time; math runs
 * in f32.
 *
 * Every file is untrusted input: every length, count and offset is checked
 * before it is used, so a corrupt or truncated file gives an NB_ERR_FORMAT
 * naming the file and the byte offset, never a crash or an allocation larger
 * than the file. */
#ifndef NABLA_ONNX_H
#define NABLA_ONNX_H

#include "backend.h"
#include "graph.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- protobuf wire format ------------------------------------------------- */

/* Protobuf wire types (the low 3 bits of a field tag). Groups (3, 4) are
 * rejected: ONNX does not use them. */
enum { NB_PB_VARINT = 0, NB_PB_FIXED64 = 1, NB_PB_LEN = 2, NB_PB_FIXED32 = 5 };

/* A bounds-checked cursor over one protobuf message. `base` is the byte
 * offset of buf[0] in the file, so errors inside nested messages name the
 * offset in the file. The reader never owns the buffer. */
typedef struct nb_pb_reader {
  const uint8_t *buf;
  size_t len, pos, base;
  const char *file; /* for error messages */
} nb_pb_reader;

/* Starts reading `len` bytes of `buf`, which is named `file` in errors. */
void nb_pb_init(nb_pb_reader *r, const void *buf, size_t len, const char *file);
/* 1 once every byte has been consumed. */
int nb_pb_done(const nb_pb_reader *r);
/* A varint of at most 10 bytes (the 10th may only hold the top bit). */
nb_status nb_pb_read_varint(nb_pb_reader *r, uint64_t *v);
/* Little-endian fixed-width values. */
nb_status nb_pb_read_fixed32(nb_pb_reader *r, uint32_t *v);
nb_status nb_pb_read_fixed64(nb_pb_reader *r, uint64_t *v);
/* A field tag: field number (>= 1) and wire type (one of NB_PB_*). */
nb_status nb_pb_read_tag(nb_pb_reader *r, uint32_t *field, int *wire);
/* A length-delimited payload: *data points into the buffer. */
nb_status nb_pb_read_bytes(nb_pb_reader *r, const uint8_t **data, size_t *n);
/* A length-delimited payload as a reader of its own (nested message or
 * packed field), with file offsets kept. */
nb_status nb_pb_read_sub(nb_pb_reader *r, nb_pb_reader *sub);
/* Skips the value of a field of wire type `wire`. */
nb_status nb_pb_skip(nb_pb_reader *r, int wire);

/* ---- ONNX tensors ---------------------------------------------------------- */

/* ONNX TensorProto.DataType values. */
enum {
  NB_ONNX_FLOAT = 1,
  NB_ONNX_UINT8 = 2,
  NB_ONNX_INT8 = 3,
  NB_ONNX_UINT16 = 4,
  NB_ONNX_INT16 = 5,
  NB_ONNX_INT32 = 6,
  NB_ONNX_INT64 = 7,
  NB_ONNX_STRING = 8,
  NB_ONNX_BOOL = 9,
  NB_ONNX_FLOAT16 = 10,
  NB_ONNX_DOUBLE = 11,
  NB_ONNX_UINT32 = 12,
  NB_ONNX_UINT64 = 13,
  NB_ONNX_BFLOAT16 = 16,
};

/* A decoded TensorProto. Floating types (float, double, float16, bfloat16)
 * are converted to f32 in `f32`; integer and bool types to int64 in `i64`
 * (uint64 keeps its bits). Exactly one of the two is non-NULL when numel > 0.
 * Strings and complex numbers are NB_ERR_UNSUPPORTED. External data
 * (data_location = EXTERNAL) is read from the file its "location" names,
 * relative to the folder of the file being decoded (see nb_onnx_load). */
typedef struct nb_onnx_tensor {
  const char *name; /* "" if unnamed */
  int elem_type;    /* NB_ONNX_* */
  int ndim;
  int64_t dims[NB_MAX_DIMS];
  int64_t numel;
  float *f32;
  int64_t *i64;
  void *owner_; /* private: the allocation that holds this tensor */
} nb_onnx_tensor;

/* Reads a serialized TensorProto file (such as the ONNX test suite's
 * input_0.pb). Free with nb_onnx_tensor_free(). */
nb_status nb_onnx_tensor_load(const char *path, nb_onnx_tensor **out);
/* Decodes a TensorProto from memory; `name` labels errors. */
nb_status nb_onnx_tensor_decode(const void *buf, size_t len, const char *name,
                                nb_onnx_tensor **out);
/* Frees a tensor from nb_onnx_tensor_load/decode (NULL is ignored). */
void nb_onnx_tensor_free(nb_onnx_tensor *t);
/* "float", "int64", ...; "unknown" for other values. */
const char *nb_onnx_type_name(int elem_type);

/* ---- ONNX models ----------------------------------------------------------- */

typedef struct nb_onnx_model nb_onnx_model;

/* Reads and decodes an ONNX model file (ModelProto), with initializers kept
 * as external data (onnx.save_model(..., save_as_external_data=True)) read
 * from their files. An external "location" must be a relative path that
 * stays inside the model's folder (no absolute paths, no "..", no symlink
 * leading out); offset and length are checked against that file's size. */
nb_status nb_onnx_load(const char *path, nb_onnx_model **out);
/* Decodes a ModelProto from memory (copied); `name` labels errors and is
 * the path external data is resolved against. */
nb_status nb_onnx_load_buffer(const void *buf, size_t len, const char *name, nb_onnx_model **out);
/* Frees a model (NULL is ignored). */
void nb_onnx_free(nb_onnx_model *m);

/* ModelProto.ir_version. */
int64_t nb_onnx_ir_version(const nb_onnx_model *m);
/* Imported opset version of `domain` ("" or "ai.onnx" for the default
 * domain), 0 if the model does not import it. */
int64_t nb_onnx_opset(const nb_onnx_model *m, const char *domain);
/* Number of graph nodes and the op type of node i. */
int nb_onnx_node_count(const nb_onnx_model *m);
const char *nb_onnx_node_op(const nb_onnx_model *m, int i);

/* Graph inputs that are not initializers (the data a caller feeds). */
int nb_onnx_input_count(const nb_onnx_model *m);
/* Describes input i; dims are -1 where the model leaves them symbolic or
 * unknown; ndim is -1 when the model gives no shape. Pointers stay valid
 * until the model is freed; any out pointer may be NULL. */
nb_status nb_onnx_input_info(const nb_onnx_model *m, int i, const char **name, int *elem_type,
                             int *ndim, const int64_t **dims);
/* Graph outputs. */
int nb_onnx_output_count(const nb_onnx_model *m);
nb_status nb_onnx_output_info(const nb_onnx_model *m, int i, const char **name, int *elem_type);

/* Checks that every node's op (in its domain and the model's opset) has an
 * importer. Fails with NB_ERR_UNSUPPORTED listing ALL unsupported ops as
 * "Op (domain, opset N)", so a user learns the whole gap at once. */
nb_status nb_onnx_check(const nb_onnx_model *m);
/* 1 if the default-domain op `op_type` has an importer. */
int nb_onnx_op_supported(const char *op_type);

/* One graph input at build time: concrete shape, and optionally its value.
 * With a value the input is folded into the graph as a constant, which is
 * how integer inputs used as shapes, axes or indices are given. */
typedef struct nb_onnx_input {
  const char *name;
  int ndim;
  const int64_t *shape;
  const nb_onnx_tensor *value; /* NULL: an nb_input fed at run time */
} nb_onnx_input;

/* Builds the model's graph into `g` for the given inputs (matched by name;
 * every model input must be given). in_nodes[i] (may be NULL) receives the
 * nb_input node of inputs[i] (f32, NULL for inputs given a value), and
 * outputs[j] (nb_onnx_output_count entries) the f32 node of output j, marked
 * as a plan output. Bool and integer outputs come as f32 values. Unsupported
 * ops fail with nb_onnx_check()'s message before any node is added; an
 * unsupported attribute or dtype fails with NB_ERR_UNSUPPORTED naming the
 * node. */
nb_status nb_onnx_build(const nb_onnx_model *m, nb_graph *g, int n_inputs,
                        const nb_onnx_input *inputs, nb_tensor **in_nodes, nb_tensor **outputs);

/* ---- protobuf writer --------------------------------------------------------- */

/* A growable buffer that protobuf fields are appended to (the mirror of
 * nb_pb_reader). Errors are sticky: after the first failure (out of memory,
 * a message over protobuf's 2 GiB limit) every call does nothing and
 * `status` keeps the error, so check it once at the end. */
typedef struct nb_pb_writer {
  uint8_t *buf; /* owned; freed by nb_pb_writer_free */
  size_t len, cap;
  nb_status status;
} nb_pb_writer;

void nb_pb_writer_init(nb_pb_writer *w);
void nb_pb_writer_free(nb_pb_writer *w);
/* Bytes already in wire format (fields from another writer). */
void nb_pb_write_raw(nb_pb_writer *w, const void *data, size_t n);
/* A bare varint (no tag). */
void nb_pb_write_varint(nb_pb_writer *w, uint64_t v);
/* A field tag: field number and wire type (NB_PB_*). */
void nb_pb_write_tag(nb_pb_writer *w, uint32_t field, int wire);
/* An int32/int64/enum/bool field (negative values take ten bytes). */
void nb_pb_write_int(nb_pb_writer *w, uint32_t field, int64_t v);
void nb_pb_write_fixed32(nb_pb_writer *w, uint32_t field, uint32_t v);
/* A float field (fixed32, little-endian IEEE bits). */
void nb_pb_write_float(nb_pb_writer *w, uint32_t field, float v);
/* A length-delimited field: bytes, or a NUL-terminated string. */
void nb_pb_write_bytes(nb_pb_writer *w, uint32_t field, const void *data, size_t n);
void nb_pb_write_string(nb_pb_writer *w, uint32_t field, const char *s);
/* A packed repeated int64 field. */
void nb_pb_write_packed_int(nb_pb_writer *w, uint32_t field, const int64_t *v, size_t n);
/* Opens a nested message (or any length-delimited field written piece by
 * piece) as field `field`; nb_pb_end(w, mark) closes it. Nest freely. */
size_t nb_pb_begin(nb_pb_writer *w, uint32_t field);
void nb_pb_end(nb_pb_writer *w, size_t mark);

/* ---- ONNX export --------------------------------------------------------------- */

/* How a graph is exported. nb_onnx_export_defaults() gives the defaults. */
typedef struct nb_onnx_export_options {
  /* Axis 0 of every input becomes the symbolic dimension "N", and so does
   * every axis that follows from it (the batch axis of the outputs, the -1
   * in reshapes). Default 1; 0 keeps the graph's shapes. */
  int dynamic_batch;
  const char *graph_name;       /* GraphProto.name; default "nabla" */
  const char *producer_version; /* ModelProto.producer_version; default "" */
  const char *doc_string;       /* ModelProto.doc_string; NULL for none */
  /* nb_onnx_export_model only: */
  int normalize; /* prepend the recipe's (x - mean) / std: the model takes raw inputs */
  int softmax;   /* append a softmax: the output is "probabilities", not "logits" */
} nb_onnx_export_options;

nb_onnx_export_options nb_onnx_export_defaults(void);

/* Writes the part of `g` that computes `outputs` (n_outputs nodes) as an
 * ONNX model (ir_version 8, opset 17, producer "nabla") into a new buffer
 * *data of *len bytes (free() it). Input nodes become graph inputs, named as
 * in the graph; variables become initializers holding their values in `st`
 * (so `st` must hold every variable the outputs read: compile the graph or
 * load weights first); constants become initializers too. Outputs are named
 * after their nodes ("output", "output_1", ... when unnamed).
 *
 * Every nabla op maps to one or a few ONNX ops; the patterns nabla's layers
 * build are recognised and written as the ONNX op PyTorch would export
 * (conv + bias -> Conv, linear -> Gemm, eval-mode batch norm ->
 * BatchNormalization, layer norm -> LayerNormalization, mean over H and W ->
 * GlobalAveragePool). docs/onnx.md lists the mapping. A graph for export is
 * an inference graph: an op with no ONNX mapping (gradient ops, active
 * dropout, assigns) is NB_ERR_UNSUPPORTED naming the op and the node. With
 * dynamic_batch, an op that would tie the batch axis to the size the graph
 * was built with (a slice or pad of the batch axis, a reshape that splits
 * it) is NB_ERR_UNSUPPORTED too; build the graph with a batch above 1 so
 * the batch axis can be told apart from axes of size 1. */
nb_status nb_onnx_export(const nb_graph *g, const nb_state *st, int n_outputs,
                         nb_tensor *const *outputs, const nb_onnx_export_options *opt,
                         uint8_t **data, size_t *len);
/* nb_onnx_export() into a file, written atomically (io.h, nb_atomic_file). */
nb_status nb_onnx_export_file(const nb_graph *g, const nb_state *st, int n_outputs,
                              nb_tensor *const *outputs, const nb_onnx_export_options *opt,
                              const char *path);
/* Exports model `m` for inference: its evaluation graph (batch norm with
 * running statistics, no dropout) from input "input" [N, input shape...] to
 * output "logits" [N, classes] (or "probabilities" with opt->softmax), with
 * the weights in `st` (every parameter and running statistic of the model,
 * by name, as after nb_safetensors_load or training). opt may be NULL. */
nb_status nb_onnx_export_model(const nb_model *m, const nb_state *st,
                               const nb_onnx_export_options *opt, const char *path);

#ifdef __cplusplus
}
#endif

#endif
