/* nabla data loading: dataset readers (IDX/MNIST, CIFAR-10, CSV, image
 * folders), preprocessing, augmentation and a prefetching batch loader.
 * docs/data.md describes the formats, where data is looked up and the
 * loader's semantics; this header is the reference. */
#ifndef NABLA_DATA_H
#define NABLA_DATA_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- IDX ------------------------------------------------------------------ */

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

/* ---- datasets ------------------------------------------------------------- */

/* An in-memory table of n examples: each one f32 feature tensor of the fixed
 * shape `shape` (e.g. [1, 28, 28], [3, 32, 32] or [F]) and an integer label.
 * Example i's features are x[i * example_numel ... (i + 1) * example_numel).
 * The struct owns x, y and the class names; release them with
 * nb_dataset_free. A zeroed struct is a valid empty dataset. */
typedef struct nb_dataset {
  int64_t n;                  /* number of examples */
  int ndim;                   /* rank of one example's features, 1..NB_MAX_DIMS-1 */
  int64_t shape[NB_MAX_DIMS]; /* shape of one example */
  int64_t example_numel;      /* product of shape[0..ndim) */
  float *x;                   /* n * example_numel features, row-major */
  int64_t *y;                 /* n labels in [0, num_classes) */
  int num_classes;            /* 0 when unknown */
  char **class_names;         /* num_classes names, or NULL when the source has none */
} nb_dataset;

/* Which half of a dataset with a fixed train/test split to read. */
typedef enum nb_split { NB_SPLIT_TRAIN = 0, NB_SPLIT_TEST = 1 } nb_split;

/* Allocates a dataset of n examples of the given shape with zeroed features
 * and labels, num_classes 0 and no class names. *out is overwritten, not
 * freed: free it first if it held a dataset. */
nb_status nb_dataset_alloc(nb_dataset *out, int64_t n, int ndim, const int64_t *shape);

/* Sets num_classes and copies the names (names may be NULL: no names). */
nb_status nb_dataset_set_classes(nb_dataset *d, int num_classes, const char *const *names);

/* Frees what the dataset owns and zeroes it. NULL is ignored. */
void nb_dataset_free(nb_dataset *d);

/* ---- readers -------------------------------------------------------------- */

/* An MNIST-style pair of IDX files: images [N, H, W] u8 and labels [N] u8.
 * Gives features [1, H, W] scaled to [0, 1] (x / 255) and the labels as
 * they are. `limit` > 0 keeps only the first `limit` examples; 0 keeps all.
 * num_classes is 1 + the largest label and no names are set.
 * A mismatch between the files (counts, dtypes, ranks) is an error naming
 * both files. */
nb_status nb_idx_dataset_load(const char *images_path, const char *labels_path, int64_t limit,
                              nb_dataset *out);

/* MNIST from a directory holding train-images-idx3-ubyte[.gz],
 * train-labels-idx1-ubyte[.gz] (NB_SPLIT_TRAIN) or the t10k-* files
 * (NB_SPLIT_TEST), gzipped or plain. Features [1, 28, 28] in [0, 1]; ten
 * classes named "0".."9". A missing file is an error listing the names tried. */
nb_status nb_mnist_load(const char *dir, nb_split split, int64_t limit, nb_dataset *out);

/* Fashion-MNIST: the same files and layout as MNIST, with its ten class names
 * ("T-shirt/top", "Trouser", ..., "Ankle boot"). */
nb_status nb_fashion_mnist_load(const char *dir, nb_split split, int64_t limit, nb_dataset *out);

/* CIFAR-10 binary version from `dir` (or from its cifar-10-batches-bin/
 * subfolder, as the official tarball unpacks): data_batch_1.bin ..
 * data_batch_5.bin for NB_SPLIT_TRAIN, test_batch.bin for NB_SPLIT_TEST. A
 * record is 1 label byte then 3072 pixel bytes (1024 R, 1024 G, 1024 B, each
 * a row-major 32x32 plane); the official files hold 10000 records, any
 * whole number of records is accepted. Features [3, 32, 32] in [0, 1]; ten
 * classes named from batches.meta.txt (one name a line) when present, else
 * the standard CIFAR-10 names. A file whose size is not a multiple of 3073
 * bytes, a label above 9 or a missing file is an error naming the file, the
 * byte offset and the expected record size. `limit` as for MNIST. */
nb_status nb_cifar10_load(const char *dir, nb_split split, int64_t limit, nb_dataset *out);

/* How a CSV table becomes a dataset. */
typedef struct nb_csv_options {
  /* Header name of the label column; NULL means the last column. */
  const char *label_column;
  /* Field separator; 0 means ','. */
  char delimiter;
  /* Another split of the same data (typically the train split) whose class
   * ids must be reused, so that "cat" is the same id in train and test.
   * NULL: ids are assigned here. */
  const nb_dataset *classes_from;
} nb_csv_options;

/* Reads a CSV table (RFC 4180: a header row, then one example a row; fields
 * may be quoted with "", "" escapes a quote; CRLF or LF; blank lines are
 * skipped). Every column but the label column must be numeric (strtod) and
 * becomes a feature, in file order: shape [F]. Labels: when every label is
 * a non-negative integer the integer is the class id (num_classes = largest
 * + 1, no names); otherwise each distinct string is a class, ids in order of
 * first appearance, with names. With classes_from carrying names, labels
 * are looked up among those names (an unknown one is an error); with
 * classes_from without names, labels must be integers below its
 * num_classes. opt may be NULL (defaults). Errors name file:line:column and
 * what was expected. */
nb_status nb_csv_load(const char *path, const nb_csv_options *opt, nb_dataset *out);

/* What to do with an image whose size differs from the requested one. */
typedef enum nb_resize {
  NB_RESIZE_BILINEAR = 0, /* resize (half-pixel centres, like PyTorch's
                             interpolate(mode="bilinear", align_corners=False)) */
  NB_RESIZE_REJECT = 1,   /* error naming the file and both sizes */
} nb_resize;

/* The tensor every image is converted to. */
typedef struct nb_image_options {
  int channels; /* 1 (grey) or 3 (RGB) */
  int height, width;
  nb_resize resize;
} nb_image_options;

/* Decodes one PNG (libpng) or JPEG (libjpeg) file, detected from its first
 * bytes, into dst: channels x height x width floats in [0, 1] (CHW). Grey
 * becomes RGB by copying; RGB becomes grey as 0.299 R + 0.587 G + 0.114 B
 * (for JPEG, libjpeg's Y channel: the same weights, rounded to 8 bits);
 * alpha is dropped; 16-bit PNG samples keep their high byte; no gamma
 * correction. Another size is resized bilinearly without antialiasing (or
 * rejected, per opt->resize). A corrupt or truncated file (including a JPEG
 * that libjpeg only warns about) is an error naming the file. */
nb_status nb_image_load(const char *path, const nb_image_options *opt, float *dst);

/* A folder of images with one subfolder per class: class ids follow the
 * sorted (byte order) subfolder names, which become the class names; within a
 * class, files are taken in sorted order. Files ending in .png, .jpg or
 * .jpeg (any case) are read; other files and names starting with '.' are
 * skipped. Features [channels, height, width] in [0, 1]. An empty tree is
 * an error, as is any image nb_image_load rejects. */
nb_status nb_image_folder_load(const char *dir, const nb_image_options *opt, nb_dataset *out);

/* Finds the directory of dataset `name` and writes it into out (cap bytes).
 * With `path` non-NULL only `path` and `path`/<name> are tried (a mistyped
 * --data should not quietly fall back to another copy). Otherwise, in order:
 * $NABLA_DATA/<name>, $NABLA_DATA, ../shared/data/<name>, data/<name> (where
 * scripts/download_data.sh puts files); relative paths are from the current
 * directory. For the known names "mnist", "fashion-mnist" and "cifar10" a
 * directory counts only if it holds the dataset's files (for cifar10, also
 * under cifar-10-batches-bin/), and their aliases ("cifar-10",
 * "cifar-10-batches-bin", "fashion_mnist", ...) are tried under the last two
 * roots too. For other names any existing directory counts, except bare
 * $NABLA_DATA. The error lists every place tried. */
nb_status nb_data_find(const char *name, const char *path, char *out, size_t cap);

/* ---- preprocessing -------------------------------------------------------- */

/* Maps [lo, hi] to [0, 1] in place: x = (x - lo) / (hi - lo), e.g. lo 0, hi
 * 255 for raw pixel values. hi must differ from lo. */
nb_status nb_dataset_scale(nb_dataset *d, float lo, float hi);

/* Per-channel mean and (population) standard deviation over all examples:
 * channels are shape[0] for rank >= 2 (CHW) and a single channel for rank 1.
 * mean and std hold that many floats. */
nb_status nb_dataset_channel_stats(const nb_dataset *d, float *mean, float *std);

/* Normalises per channel in place: x = (x - mean[c]) / std[c], channels as
 * in nb_dataset_channel_stats. Every std must be > 0. */
nb_status nb_dataset_normalize(nb_dataset *d, const float *mean, const float *std);

/* Per-feature mean and standard deviation, fitted on one split (train) and
 * applied to others (test) so that both see the same transform. */
typedef struct nb_standardizer {
  int64_t numel; /* features per example */
  float *mean;   /* numel values, owned */
  float *std;    /* numel values, owned; 1 where a feature is constant */
} nb_standardizer;

/* Fits mean and population std of every feature of d (n >= 1). A constant
 * feature gets std 1 so that applying maps it to 0 instead of dividing by 0. */
nb_status nb_standardizer_fit(const nb_dataset *d, nb_standardizer *out);
/* x = (x - mean) / std per feature, in place; d's example size must match. */
nb_status nb_standardizer_apply(const nb_standardizer *s, nb_dataset *d);
void nb_standardizer_free(nb_standardizer *s);

/* Writes n rows of num_classes floats: 1 at the label, 0 elsewhere. A label
 * outside [0, num_classes) is an error naming its index. */
nb_status nb_labels_one_hot(const int64_t *labels, int64_t n, int num_classes, float *out);

/* ---- augmentation --------------------------------------------------------- */

/* Random augmentation of [C, H, W] (or [H, W]) examples, applied by the
 * loader per example. All fields 0 means none. */
typedef struct nb_augment {
  int crop_pad; /* > 0: pad every side with crop_pad zeros, then crop a random
                   H x W window (offsets uniform in [0, 2 crop_pad]) */
  int hflip;    /* 1: mirror left-right with probability 1/2 */
} nb_augment;

/* dst (C x H x W) = the H x W window at (dy, dx) of src zero-padded by `pad`
 * on every side: dst[c][i][j] = src[c][i + dy - pad][j + dx - pad], 0 outside
 * src. dy and dx must lie in [0, 2 pad]; src and dst must not overlap. */
nb_status nb_crop_padded(const float *src, float *dst, int64_t c, int64_t h, int64_t w, int pad,
                         int dy, int dx);

/* Mirrors every row of a C x H x W tensor in place. */
void nb_hflip(float *x, int64_t c, int64_t h, int64_t w);

/* Applies `a` to one example (shape of rank 2 or 3) from src into dst (no
 * overlap), drawing from rng in this order: dy, dx (each nb_rng_next %
 * (2 pad + 1), only when crop_pad > 0), then the flip (nb_rng_next & 1,
 * only when hflip; 1 flips). Crop comes before the flip. */
nb_status nb_augment_apply(const nb_augment *a, int ndim, const int64_t *shape, const float *src,
                           float *dst, nb_rng *rng);

/* ---- batch loader --------------------------------------------------------- */

typedef struct nb_loader_options {
  int64_t batch_size; /* >= 1 */
  int shuffle;        /* 1: a fresh Fisher-Yates permutation every epoch */
  int drop_last;      /* 1: skip the last partial batch of each epoch */
  int prefetch;       /* 1: prepare the next batch on a background thread */
  int one_hot;        /* 1: also fill nb_batch.y_onehot (needs num_classes) */
  uint64_t seed;      /* seeds shuffling and augmentation */
  nb_augment augment;
  /* Data-parallel sharding (dist.h): with shards > 1 the loader hands out
   * only part `shard` (0-based) of every batch, examples [shard * b,
   * (shard + 1) * b) of it with b = batch_size / shards, augmented exactly
   * as in the whole batch. Loaders with the same dataset and seed and
   * shards 0 .. shards-1 together yield every whole batch. Needs drop_last
   * and batch_size divisible by shards. 0 or 1: whole batches. */
  int shards;
  int shard;
} nb_loader_options;

/* batch_size as given, shuffle 1, drop_last 0, prefetch 1, one_hot 0, seed
 * 0, no augmentation, no sharding. */
nb_loader_options nb_loader_defaults(int64_t batch_size);

/* One batch. The loader owns the buffers; they stay valid until the next
 * nb_loader_next, nb_loader_set_pos or nb_loader_free on that loader. */
typedef struct nb_batch {
  int64_t size;           /* examples: batch_size, or fewer in a last partial batch */
  int64_t epoch;          /* 0-based epoch this batch belongs to */
  int64_t index;          /* 0-based batch index within the epoch */
  int last;               /* 1 for the epoch's last batch */
  const float *x;         /* [size, shape...] features, augmented */
  const int64_t *y;       /* [size] labels */
  const float *y_onehot;  /* [size, num_classes] when one_hot, else NULL */
  const int64_t *indices; /* [size] dataset row of each example */
} nb_batch;

/* Where a loader stands: enough to continue with exactly the batches an
 * uninterrupted run would have seen. Plain data: save it in a checkpoint. */
typedef struct nb_loader_pos {
  int64_t epoch; /* epoch of the next batch nb_loader_next returns */
  int64_t batch; /* its index within that epoch */
  nb_rng rng;    /* generator state at the start of that epoch (before its shuffle) */
} nb_loader_pos;

typedef struct nb_loader nb_loader;

/* A loader over `ds`, which it borrows: ds must outlive the loader and not
 * change while it runs. Batches follow each other endlessly, epoch after
 * epoch; nb_batch.last marks an epoch's end. Epoch e's order is a
 * Fisher-Yates shuffle of 0..n-1 drawn from a generator seeded with `seed`
 * (and continued from epoch to epoch); each example's augmentation draws
 * from its own generator derived from the epoch and its position, so the
 * batches depend on the seed only, never on thread timing or on prefetch.
 * With prefetch a background thread fills one buffer while the caller uses
 * the other (double buffering). */
nb_status nb_loader_new(const nb_dataset *ds, const nb_loader_options *opt, nb_loader **out);

/* Hands out the next batch, waiting for the prefetch thread if it is not
 * ready yet, and lets the thread start on the one after. */
nb_status nb_loader_next(nb_loader *l, nb_batch *out);

/* Batches per epoch: ceil(n / batch_size), or floor with drop_last. */
int64_t nb_loader_batches_per_epoch(const nb_loader *l);

/* The position of the batch the next nb_loader_next will return (batches
 * prefetched but not yet handed out do not count). */
nb_status nb_loader_get_pos(const nb_loader *l, nb_loader_pos *pos);

/* Continues from `pos` (from nb_loader_get_pos, possibly saved in a
 * checkpoint): the following batches are exactly those that followed it.
 * The loader must be over the same dataset with the same batch_size,
 * shuffle, drop_last and augment; its seed does not matter (it only picks
 * the starting position). Discards prefetched work; earlier batches'
 * buffers become invalid. */
nb_status nb_loader_set_pos(nb_loader *l, const nb_loader_pos *pos);

/* Stops and joins the prefetch thread and frees the loader. NULL is ignored. */
void nb_loader_free(nb_loader *l);

/* ---- character tokenizer -------------------------------------------------- */

/* A byte-level vocabulary: the distinct bytes of a training text, sorted,
 * so token ids are stable for a given text (tinyshakespeare: 65 tokens). */
typedef struct nb_char_vocab {
  int size;                 /* number of tokens, 0..256 */
  unsigned char bytes[256]; /* token id -> byte, ascending */
  int16_t id[256];          /* byte -> token id, -1 when not in the vocabulary */
} nb_char_vocab;

/* Builds the vocabulary of the n bytes at `text` (the sorted unique bytes). */
nb_status nb_char_vocab_build(const char *text, size_t n, nb_char_vocab *out);

/* Reads a whole file into a malloc'ed buffer (*data, freed by the caller;
 * NUL-terminated for convenience, *n excludes the NUL). Errors name the file. */
nb_status nb_text_read_file(const char *path, char **data, size_t *n);

/* Encodes n bytes into ids[n]; a byte outside the vocabulary is an error
 * naming its offset and value. */
nb_status nb_char_encode(const nb_char_vocab *v, const char *text, size_t n, int32_t *ids);

/* Decodes n ids into text[n] (no NUL is added); an id outside [0, size) is
 * an error naming its position. */
nb_status nb_char_decode(const nb_char_vocab *v, const int32_t *ids, size_t n, char *text);

/* Saves the vocabulary as text: a header line "nabla-char-vocab 1 SIZE" then
 * the byte values in decimal, one per line, so any byte survives. */
nb_status nb_char_vocab_save(const nb_char_vocab *v, const char *path);

/* Loads a file written by nb_char_vocab_save; a malformed file (bad header,
 * values not ascending in 0..255, wrong count) is an error naming the line. */
nb_status nb_char_vocab_load(const char *path, nb_char_vocab *out);

/* ---- byte-level BPE tokenizer --------------------------------------------- */

/* A GPT-2-style byte-level BPE tokenizer (docs/data.md, "Tokenizers"): ids
 * 0..255 are the bytes, id 256 + r is merge r (the concatenation of its two
 * parts), and registered special tokens follow the merges. Any byte string
 * encodes, and decodes back to exactly itself. Opaque; immutable once
 * built, except for nb_bpe_add_special; encode and decode only read it, so
 * threads may share one. Typical use:
 *
 *   nb_bpe *tok;  nb_bpe_load("vocab.bpe", &tok);
 *   int32_t *ids = malloc(n * sizeof *ids);  size_t n_ids;
 *   nb_bpe_encode(tok, text, n, 0, ids, &n_ids);   (n_ids <= n)
 *   ... model over nb_bpe_vocab_size(tok) ids ...
 *   nb_bpe_free(tok); */
typedef struct nb_bpe nb_bpe;

/* Most ids a tokenizer may have (bytes, merges and special tokens). */
#define NB_BPE_MAX_VOCAB (1 << 20)
/* Longest special token, in bytes, and most special tokens. */
#define NB_BPE_MAX_SPECIAL_LEN 128
#define NB_BPE_MAX_SPECIALS    1024

/* Length (>= 1 when n > 0) of the pre-split chunk at the start of text[0..n).
 * Training and encoding cut text into chunks and never merge across them.
 * The rule ("gpt4-bytes") is GPT-4's split pattern on byte classes:
 * letters = A-Z a-z and every byte >= 0x80 (so UTF-8 characters stay in
 * words, and any byte sequence splits), digits = 0-9, whitespace = space \t
 * \n \v \f \r, other = the rest. The first alternative that matches wins:
 *   1. ' followed by s d m t ll ve re (ASCII, any case): "'s", "'LL"
 *   2. one optional byte that is not \r \n, a letter or a digit, then letters
 *   3. one to three digits
 *   4. an optional space, a run of "other" bytes, then any \r and \n
 *   5. whitespace up to and including its last \r or \n
 *   6. a whitespace run followed by a non-space byte, less its last byte
 *      (which joins the next word, " world"); a run at the end, all of it
 *   7. a single whitespace byte
 * i.e. '(?i:[sdmt]|ll|ve|re)|[^\r\nLN]?L+|N{1,3}| ?[^\sLN]+[\r\n]*|
 * \s*[\r\n]|\s+(?!\S)|\s+ (tests/ref/bpe_ref.py has it as a Python re). */
size_t nb_bpe_chunk_len(const char *text, size_t n);

/* Learns merges from text[0..n) until the vocabulary holds vocab_size ids
 * (256 bytes + vocab_size - 256 merges), or fewer when no adjacent pair is
 * left. Each step merges the most frequent adjacent pair within chunks
 * (pairs overlap: "aaa" counts (a,a) twice; merging is left to right, as in
 * minbpe); ties go to the lowest pair (smallest left id, then smallest right
 * id), not to the first seen as in minbpe. Pair counts are updated
 * incrementally over the distinct chunks. vocab_size in [256,
 * NB_BPE_MAX_VOCAB]. *out is freed with nb_bpe_free. */
nb_status nb_bpe_train(const char *text, size_t n, int vocab_size, nb_bpe **out);

/* Frees the tokenizer. NULL is ignored. */
void nb_bpe_free(nb_bpe *t);

/* Number of ids: 256 + merges + special tokens. */
int nb_bpe_vocab_size(const nb_bpe *t);
/* Number of merges; merge r made id 256 + r. */
int nb_bpe_num_merges(const nb_bpe *t);
/* The merges in rank order: 2 * nb_bpe_num_merges ids, merge r joins
 * ids [2r] and [2r + 1]. Owned by t. */
const int32_t *nb_bpe_merges(const nb_bpe *t);

/* Registers a special token: a string of 1..NB_BPE_MAX_SPECIAL_LEN
 * printable ASCII bytes without spaces (0x21..0x7e), e.g. "<|endoftext|>",
 * not already registered, at most NB_BPE_MAX_SPECIALS of them. It gets the
 * next id (nb_bpe_vocab_size before the call), written to *id when id is
 * not NULL. Merges cannot be added after it. */
nb_status nb_bpe_add_special(nb_bpe *t, const char *name, int32_t *id);

/* The id of a registered special token. An unregistered name is
 * NB_ERR_INVALID_ARG naming it and the registered ones. */
nb_status nb_bpe_special_id(const nb_bpe *t, const char *name, int32_t *id);

/* Encode flag: registered special-token strings in the text become their
 * ids (the longest one starting at the earliest position wins). Without it
 * the text is all ordinary bytes, so "<|endoftext|>" in a training file is
 * just text, and a string that looks special but is not registered is
 * ordinary text either way. */
#define NB_BPE_ALLOW_SPECIAL 1

/* Encodes text[0..n) into ids (room for n ids: a token covers at least one
 * byte) and sets *n_ids. Each chunk starts as its bytes and repeatedly
 * merges its lowest-rank adjacent pair (left to right among equals) until
 * no pair of it is a merge: the same ids as GPT-2's and minbpe's encoders. */
nb_status nb_bpe_encode(const nb_bpe *t, const char *text, size_t n, int flags, int32_t *ids,
                        size_t *n_ids);

/* Decodes n ids into a malloc'ed buffer (*text, freed by the caller;
 * NUL-terminated for convenience, *len excludes the NUL). Special ids become
 * their strings. An id outside [0, vocab size) is NB_ERR_INVALID_ARG naming
 * its position. */
nb_status nb_bpe_decode(const nb_bpe *t, const int32_t *ids, size_t n, char **text, size_t *len);

/* The bytes of one id (*bytes owned by t, not NUL-terminated): for printing
 * generated text token by token. A token may end inside a UTF-8 character. */
nb_status nb_bpe_token(const nb_bpe *t, int32_t id, const char **bytes, size_t *len);

/* Writes the vocabulary file (text, docs/data.md):
 *   nabla-bpe 1
 *   split gpt4-bytes
 *   merges M
 *   A B              M lines, merge r's two ids, in rank order
 *   special K
 *   NAME             K lines, in id order
 * through a temporary file renamed over path, so a reader sees the old file
 * or the new one, never a part. */
nb_status nb_bpe_save(const nb_bpe *t, const char *path);

/* Reads a file written by nb_bpe_save. Anything else (wrong header or
 * version, unknown split, a count above the limits, a merge id not below
 * 256 + its rank, a repeated merge or special token, a bad name, missing
 * or extra lines, a line over 255 bytes, merges whose tokens would total
 * more than 256 bytes per byte of the file read up to them (at least
 * 1 MiB)) is NB_ERR_FORMAT naming path:line and the reason. Memory grows
 * with the lines read, not with the counts a header claims, so a small
 * hostile file (or pipe) fails without large allocations. */
nb_status nb_bpe_load(const char *path, nb_bpe **out);

/* ---- token windows -------------------------------------------------------- */

/* Which part of the token array windows come from. */
typedef enum nb_token_split {
  NB_TOKENS_TRAIN = 0, /* the first 90% of the tokens */
  NB_TOKENS_VAL = 1,   /* the last 10% */
} nb_token_split;

/* Random contiguous windows for next-token training: x = tokens[i : i+T],
 * y = tokens[i+1 : i+T+1], with i uniform over the positions where the
 * window and its target both lie in the split. Plain data with no
 * allocation: it borrows `tokens`, which must outlive it, and can be copied
 * into a checkpoint to resume the same sequence of windows. */
typedef struct nb_token_windows {
  const int32_t *tokens;
  int64_t n_train, n_val; /* tokens in each split; val starts at tokens + n_train */
  int64_t block;          /* T */
  /* one generator per split, so evaluating does not change the training
   * windows that follow */
  nb_rng rng[2];
} nb_token_windows;

/* Sets up windows of `block` tokens over tokens[0..n) split 90/10 (train gets
 * floor(0.9 n)); both splits must hold at least block + 1 tokens. */
nb_status nb_token_windows_init(nb_token_windows *w, const int32_t *tokens, int64_t n,
                                int64_t block, uint64_t seed);

/* Fills x and y [batch, block] with `batch` random windows of `split`. */
nb_status nb_token_windows_next(nb_token_windows *w, nb_token_split split, int64_t batch,
                                int32_t *x, int32_t *y);

#ifdef __cplusplus
}
#endif

#endif
