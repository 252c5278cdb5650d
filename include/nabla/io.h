/* nabla file I/O: crash-safe file writes, safetensors files, training
 * checkpoints, TensorBoard event files and CSV logs.
 *
 * Every writer that replaces a whole file (safetensors, checkpoints) goes
 * through nb_atomic_file: the new content is written to a temporary file
 * beside the target and renamed over it, so a crash mid-save leaves either
 * the old file or the new one, never a torn one. Logs (TensorBoard, CSV)
 * append instead and flush whole records, so a crashed run keeps its curves. */
#ifndef NABLA_IO_H
#define NABLA_IO_H

#include <stdio.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- files and directories ------------------------------------------------ */

/* Creates directory `path` and its missing parents (like `mkdir -p`). An
 * existing directory is fine; an existing non-directory is NB_ERR_IO. */
nb_status nb_mkdirs(const char *path);

/* A file being written atomically. Open it, write through nb_atomic_write()
 * or the stdio stream, then either commit (the target now holds exactly what
 * was written) or abort (the target is untouched). Either call frees it. */
typedef struct nb_atomic_file nb_atomic_file;

/* Creates a temporary file "<path>.tmp.<random>" in the target's directory
 * (so the final rename stays on one file system). */
nb_status nb_atomic_open(const char *path, nb_atomic_file **out);
/* The stdio stream of the temporary file, for fprintf and friends; errors
 * on it are caught by nb_atomic_commit(). */
FILE *nb_atomic_stream(nb_atomic_file *f);
/* Writes n bytes; NB_ERR_IO (naming the file and offset) on a short write. */
nb_status nb_atomic_write(nb_atomic_file *f, const void *data, size_t n);
/* Flushes, fsyncs and closes the temporary file, renames it over the target
 * and fsyncs the directory so the rename itself survives a power cut. On any
 * failure before the rename the temporary file is removed and the old target
 * is left as it was. Frees f in every case. */
nb_status nb_atomic_commit(nb_atomic_file *f);
/* Discards the temporary file and frees f (NULL is ignored). */
void nb_atomic_abort(nb_atomic_file *f);

/* ---- string maps ----------------------------------------------------------- */

/* A small ordered map of string keys to string values: safetensors
 * metadata and checkpoint fields. Keys are unique; entries keep insertion
 * order (a replaced value keeps its key's place). */
typedef struct nb_kv nb_kv;

nb_status nb_kv_new(nb_kv **out);
void nb_kv_free(nb_kv *kv);
/* Sets key to a copy of value, replacing an existing value. */
nb_status nb_kv_set(nb_kv *kv, const char *key, const char *value);
/* The value of key, or NULL when absent. Valid until the key is set again
 * or the map is freed. */
const char *nb_kv_get(const nb_kv *kv, const char *key);
/* Number of entries; entry i (0 <= i < count) in insertion order. */
int nb_kv_count(const nb_kv *kv);
nb_status nb_kv_entry(const nb_kv *kv, int i, const char **key, const char **value);
/* Integers as decimal text. nb_kv_get_i64 fails with NB_ERR_FORMAT naming
 * the key when it is absent or not a whole decimal int64. */
nb_status nb_kv_set_i64(nb_kv *kv, const char *key, int64_t value);
nb_status nb_kv_get_i64(const nb_kv *kv, const char *key, int64_t *out);
/* An nb_rng as its four state words in hex, 16 digits each, separated by
 * commas ("0123456789abcdef,..."), so it restores bit for bit. */
nb_status nb_kv_set_rng(nb_kv *kv, const char *key, const nb_rng *rng);
nb_status nb_kv_get_rng(const nb_kv *kv, const char *key, nb_rng *out);

/* ---- safetensors ----------------------------------------------------------- */

/* The safetensors format (the Hugging Face `safetensors` package reads and
 * writes it): an 8-byte little-endian header length N, N bytes of JSON
 * mapping each tensor name to {"dtype", "shape", "data_offsets"} plus an
 * optional "__metadata__" string map, then the raw little-endian data. */

/* Load flags. By default every state variable (with the prefix) must be in
 * the file and every tensor in the file must be in the state. */
#define NB_SAFETENSORS_ALLOW_MISSING 1u /* variables absent from the file keep their values */
#define NB_SAFETENSORS_ALLOW_EXTRA   2u /* tensors with no variable in the state are skipped */

/* Saves the variables of `st` whose names start with `prefix` (NULL or ""
 * for all) with `metadata` (may be NULL) as "__metadata__". Tensors are
 * ordered by element size (largest first), then by name: the same state
 * always gives the same bytes, and every tensor's data is aligned to its
 * element size. Atomic: see nb_atomic_file. A variable named "__metadata__"
 * is NB_ERR_INVALID_ARG. */
nb_status nb_safetensors_save(const char *path, const nb_state *st, const char *prefix,
                              const nb_kv *metadata);
/* Like nb_safetensors_save, for the variables for which keep(name, ctx)
 * returns non-zero (keep NULL: all), e.g. a model's weights without its
 * optimizer state (see nb_optimizer_owns). */
nb_status nb_safetensors_save_if(const char *path, const nb_state *st,
                                 int (*keep)(const char *name, void *ctx), void *ctx,
                                 const nb_kv *metadata);

/* Loads a safetensors file into the variables of `st` whose names start with
 * `prefix` (NULL or "" for all; file tensors are matched by their full
 * name). Each tensor must match its variable's dtype and shape (the error
 * names the tensor and both shapes). The whole file is checked before any
 * variable is written, so on a format or matching error the state is
 * unchanged. */
nb_status nb_safetensors_load(const char *path, nb_state *st, const char *prefix, unsigned flags);

/* One tensor of an opened safetensors file. */
typedef struct nb_safetensors_info {
  const char *name;
  nb_dtype dtype;
  int ndim;
  int64_t shape[NB_MAX_DIMS];
  uint64_t offset; /* byte offset of the data in the file (not the data section) */
  uint64_t bytes;
} nb_safetensors_info;

/* A safetensors file opened for reading without a state (for tools that
 * list or inspect files). Opening reads and fully validates the header
 * against the file size; data is read on demand. */
typedef struct nb_safetensors nb_safetensors;

/* A corrupt or truncated file is NB_ERR_FORMAT with a message naming the
 * file and the byte offset or JSON field at fault. No allocation is sized
 * from an unchecked field: the header must fit in the file (and in 100 MB),
 * and tensor sizes must fit in the data actually present. */
nb_status nb_safetensors_open(const char *path, nb_safetensors **out);
void nb_safetensors_close(nb_safetensors *f);
/* Tensors in data order (ascending offset). */
int nb_safetensors_count(const nb_safetensors *f);
const nb_safetensors_info *nb_safetensors_tensor(const nb_safetensors *f, int i);
/* Index of the tensor called name, or -1. */
int nb_safetensors_find(const nb_safetensors *f, const char *name);
/* The "__metadata__" map (empty when the file has none); owned by f. */
const nb_kv *nb_safetensors_metadata(const nb_safetensors *f);
/* nb_safetensors_load() on an opened file (after looking at its metadata,
 * say). */
nb_status nb_safetensors_load_into(nb_safetensors *f, nb_state *st, const char *prefix,
                                   unsigned flags);
/* Copies tensor i's data to dst in host byte order (bytes must equal the
 * tensor's size). */
nb_status nb_safetensors_read(nb_safetensors *f, int i, void *dst, size_t bytes);

/* ---- training checkpoints --------------------------------------------------- */

/* A checkpoint is one safetensors file holding every variable of the state
 * (parameters, optimizer moments, running statistics) and string metadata
 * for resuming a run exactly; docs/checkpoint-format.md describes it. These
 * are the keys the trainer sets (any other key is passed through): */
#define NB_CKPT_FORMAT      "format"         /* "nabla.checkpoint", set by nb_checkpoint_save */
#define NB_CKPT_VERSION     "format_version" /* "1", set by nb_checkpoint_save */
#define NB_CKPT_STEP        "step"           /* optimizer steps completed (nb_kv_set_i64) */
#define NB_CKPT_EPOCH       "epoch"          /* current epoch, as the trainer counts it */
#define NB_CKPT_PLAN_STEP   "plan_step"      /* nb_plan_step() of the training plan */
#define NB_CKPT_RNG         "rng"            /* trainer's nb_rng (nb_kv_set_rng) */
#define NB_CKPT_DATA_POS    "data_position"  /* samples consumed in the current epoch */
#define NB_CKPT_MODEL       "model"          /* model file the state was built from */
#define NB_CKPT_BATCH       "batch"          /* examples (windows) per optimizer step */
#define NB_CKPT_FORMAT_NAME "nabla.checkpoint"

/* Saves every variable of `st` and the entries of `meta` (may be NULL)
 * atomically; "format" and "format_version" are added (a user key of that
 * name is NB_ERR_INVALID_ARG). */
nb_status nb_checkpoint_save(const char *path, const nb_state *st, const nb_kv *meta);
/* Loads a checkpoint into `st` (flags as nb_safetensors_load; 0 for an
 * exact match, the usual case when resuming) and, when meta_out is not
 * NULL, returns its metadata in a new map the caller frees. A file without
 * "format": "nabla.checkpoint" is NB_ERR_FORMAT. On error the state is
 * unchanged and *meta_out is NULL. */
nb_status nb_checkpoint_load(const char *path, nb_state *st, unsigned flags, nb_kv **meta_out);

/* ---- NumPy .npy arrays ---------------------------------------------------------- */

/* An array read from a .npy file (numpy.save; format versions 1.0, 2.0 and
 * 3.0). File dtypes become nabla dtypes: f4 -> f32, f8 -> f32 (rounded),
 * f2 -> f16, i1/i2/i4 -> i32, i8 -> i64, u1 -> u8, u2 -> i32, u4 -> i64,
 * b1 -> u8 (0 or 1); either byte order. Only C-order arrays are read
 * (Fortran order beyond rank 1 is NB_ERR_FORMAT saying so). */
typedef struct nb_npy {
  nb_dtype dtype;
  int ndim; /* 0 for a scalar */
  int64_t shape[NB_MAX_DIMS];
  int64_t numel; /* may be 0 (a dimension of size 0) */
  void *data;    /* numel elements of dtype in host byte order (malloc'ed) */
  char descr[8]; /* the file's dtype, e.g. "<f8" */
} nb_npy;

/* Reads a .npy file. A hostile or damaged file (bad magic, a truncated or
 * malformed header, a shape that does not match the data the file holds, a
 * shape product that overflows) is NB_ERR_FORMAT naming the file and the
 * reason; nothing is allocated before the sizes are checked against the
 * file's size. Free with nb_npy_free(). */
nb_status nb_npy_load(const char *path, nb_npy *out);
/* nb_npy_load on a file held in memory; `name` labels errors. */
nb_status nb_npy_decode(const void *buf, size_t len, const char *name, nb_npy *out);
/* Frees a->data (the struct itself is the caller's). NULL is ignored. */
void nb_npy_free(nb_npy *a);
/* Writes `data` (C order, host byte order) as a version 1.0 .npy file that
 * numpy.load reads: f32 -> <f4, f16 -> <f2, bf16 -> <f4 (widened exactly),
 * i32 -> <i4, i64 -> <i8, u8 -> |u1. Atomic: see nb_atomic_file. */
nb_status nb_npy_save(const char *path, nb_dtype dtype, int ndim, const int64_t *shape,
                      const void *data);

/* ---- TensorBoard ------------------------------------------------------------- */

/* Continues CRC-32C (Castagnoli) `crc` over n bytes; start with 0. */
uint32_t nb_crc32c(uint32_t crc, const void *data, size_t n);

/* A TensorBoard event file writer (`tensorboard --logdir DIR` shows its
 * scalars). */
typedef struct nb_tb_writer nb_tb_writer;

/* Creates logdir (and parents) and a new file
 * "events.out.tfevents.<unix time>.<hostname>" in it (".1", ".2", ... is
 * appended if that name is taken), holding the file_version event. */
nb_status nb_tb_open(const char *logdir, nb_tb_writer **out);
/* Path of the event file (valid until nb_tb_close). */
const char *nb_tb_path(const nb_tb_writer *w);
/* Appends one scalar event stamped with the current time. Buffered: call
 * nb_tb_flush() to make it visible to TensorBoard. */
nb_status nb_tb_scalar(nb_tb_writer *w, const char *tag, int64_t step, float value);
nb_status nb_tb_flush(nb_tb_writer *w);
/* Flushes and closes; returns the first error (the writer is freed anyway).
 * NULL is OK. */
nb_status nb_tb_close(nb_tb_writer *w);

/* ---- CSV logs ----------------------------------------------------------------- */

/* A CSV log: a header row of column names, then one row per call, each
 * flushed to the OS as a whole line so a crashed run keeps every finished
 * row. Fields are quoted per RFC 4180 when they hold a comma, a double quote,
 * CR or LF; rows end in "\n". Numbers are printed with the fewest digits that
 * read back to the same double ("nan", "inf", "-inf" for non-finite). */
typedef struct nb_csvlog nb_csvlog;

/* Open flag: keep an existing log (resumed run) if its header row matches
 * `columns`, dropping an unfinished last line; otherwise the file is
 * replaced. A mismatched header is NB_ERR_FORMAT. */
#define NB_CSVLOG_APPEND 1u

nb_status nb_csvlog_open(const char *path, int ncols, const char *const *columns, unsigned flags,
                         nb_csvlog **out);
/* Builds a row cell by cell; nb_csvlog_end_row() writes it (exactly ncols
 * cells, else NB_ERR_INVALID_ARG and the row is dropped). */
nb_status nb_csvlog_num(nb_csvlog *log, double value);
nb_status nb_csvlog_str(nb_csvlog *log, const char *value);
nb_status nb_csvlog_end_row(nb_csvlog *log);
/* Writes a row of n == ncols numbers. */
nb_status nb_csvlog_row(nb_csvlog *log, const double *values, int n);
/* Closes the file; returns an error if the final close failed. NULL is OK. */
nb_status nb_csvlog_close(nb_csvlog *log);

#ifdef __cplusplus
}
#endif

#endif
