/* nabla LoRA adapter files and merging. The adapters themselves are built
 * by the layers (nb_lora and nb_nn.lora in nn.h; nb_model_set_lora in
 * model.h); this header saves them apart from the base weights, loads them
 * back, and folds them into the base weights.
 *
 * An adapter file is a safetensors file (io.h) holding only the adapter
 * tensors, "<layer>.lora_A" [rank, in] and "<layer>.lora_B" [out, rank] in
 * f32, with this "__metadata__" (docs/training.md):
 *   format          "nabla.lora"
 *   format_version  "1"
 *   rank            the rank, decimal
 *   alpha           the scale numerator (update = alpha / rank * B A)
 *   dropout         the adapter input's dropout probability
 *   targets         the target patterns, as in nb_lora.targets */
#ifndef NABLA_LORA_H
#define NABLA_LORA_H

#include "io.h"
#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NB_LORA_FORMAT_NAME "nabla.lora"

/* Writes the adapters of `st` (every variable nb_lora_is_adapter names)
 * with `cfg` as metadata, atomically. Each lora_A must have cfg->rank rows.
 * A state without adapters is NB_ERR_INVALID_ARG. */
nb_status nb_lora_save(const char *path, const nb_state *st, const nb_lora *cfg);

/* Reads the configuration an adapter file was trained with. A safetensors
 * file without format "nabla.lora", with a tensor that is not an adapter, or
 * with a missing or malformed field, is NB_ERR_FORMAT naming the file and
 * the field or tensor. */
nb_status nb_lora_read_config(const char *path, nb_lora *out);

/* Loads an adapter file into `st`, whose adapter variables must already
 * exist (compile a graph built with the file's configuration first). Every
 * adapter variable of the state must be in the file and every tensor of the
 * file must be an adapter variable of the state, with the same shape; other
 * variables are left alone. On error the state is unchanged. */
nb_status nb_lora_load(const char *path, nb_state *st);

/* Folds every adapter pair of `st` into its layer's weight,
 *   W <- W + (cfg->alpha / cfg->rank) B A,
 * (the product summed in double, the result rounded once to f32), and sets
 * B to zero, so a graph built with or without the adapters on this state
 * computes what the adapted layer computed before. Biases are untouched.
 * All or nothing: every pair is checked (A [rank, in], B [out, rank],
 * weight [out, in], all f32) and every merged weight computed, in host
 * memory (about twice the adapted weights), before any is written; an
 * update that makes a finite weight inf or NaN is NB_ERR_INVALID_ARG
 * naming the layer and element. On any error the state is unchanged (a
 * device write that fails part way is undone by writing back the saved
 * weights). A state without adapters is NB_ERR_INVALID_ARG. */
nb_status nb_lora_merge(nb_state *st, const nb_lora *cfg);

/* nb_lora_merge on files, no model needed: reads the base weights file
 * `weights` (every tensor) and the adapter file `adapters` (with its
 * configuration), merges, and writes every base tensor, the merged weights
 * included, to `out` (atomically) with the base file's metadata plus
 * "lora_merged" = the adapter file's path. The merged file loads wherever
 * the base file did. Adapter tensors in `weights` (the weights.safetensors
 * of a LoRA run holds them) are ignored: the adapter file's are merged.
 * An adapter file holding any other tensor is NB_ERR_FORMAT: it would
 * replace the base weight of that name. */
nb_status nb_lora_merge_files(const char *weights, const char *adapters, const char *out);

#ifdef __cplusplus
}
#endif

#endif
