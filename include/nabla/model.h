/* nabla model files: a network and its training recipe in a short INI-style
 * text file (darknet's cfg idea), parsed into an nb_model that builds the
 * network into any graph with the nn.h layers.
 *
 *   [net]                      [train]
 *   input = 1, 28, 28          optimizer = adam
 *   classes = 10               lr = 3e-3
 *                              schedule = onecycle
 *   [conv2d conv1]
 *   out = 32                   ... one section per layer, in order
 *   kernel = 3
 *   activation = relu
 *
 * docs/model-format.md is the full reference, with the shipped models in
 * models/. Parse errors read "FILE:LINE: expected ..., found ...".
 *
 * Parameter names come from the layer names ("conv1.weight"), so building
 * the same model into a training graph and an evaluation graph binds the
 * same parameters in one nb_state (see nn.h). */
#ifndef NABLA_MODEL_H
#define NABLA_MODEL_H

#include <stdio.h>

#include "dist.h"
#include "nn.h"
#include "optim.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_model nb_model;

/* ---- the training recipe ([train]) ----------------------------------------- */

typedef enum nb_recipe_optimizer {
  NB_RECIPE_ADAM = 0, /* torch.optim.Adam (weight decay as an L2 penalty) */
  NB_RECIPE_ADAMW,    /* torch.optim.AdamW (decoupled weight decay) */
  NB_RECIPE_SGD,      /* torch.optim.SGD (momentum, nesterov) */
} nb_recipe_optimizer;

/* The arithmetic of a training run (docs/cuda.md, "Mixed precision"). */
typedef enum nb_precision {
  NB_PRECISION_FP32 = 0, /* everything f32 (default) */
  NB_PRECISION_BF16,     /* matmuls and convolutions take bf16 operands (autocast),
                            f32 master weights; no loss scaling */
  NB_PRECISION_FP16,     /* f16 operands likewise, plus dynamic loss scaling
                            (nb_grad_scaler, optim.h) */
} nb_precision;

/* Most channels a mean/std normalisation can list. */
#define NB_RECIPE_MAX_CHANNELS 8

/* How to train the model. Every field has a default (nb_recipe_defaults)
 * that a [train] key overrides. */
typedef struct nb_recipe {
  nb_recipe_optimizer optimizer; /* default adam */
  float lr;                      /* default 1e-3; the peak for onecycle */
  float momentum;                /* sgd; default 0 */
  int nesterov;                  /* sgd; default 0 */
  float weight_decay;            /* default 0 */
  float beta1, beta2, eps;       /* adam(w); defaults 0.9, 0.999, 1e-8 */

  /* The learning-rate schedule over the whole run (train.h): constant,
   * step, cosine, onecycle or warmup_cosine. */
  nb_schedule_kind schedule; /* default constant */
  int64_t warmup;            /* warmup_cosine: linear warm-up updates (required) */
  int step_size;             /* step: epochs between decays; default 30 */
  float gamma;               /* step: decay factor; default 0.1 */
  float min_lr;              /* cosine, warmup_cosine: final lr; default 0 */
  float pct_start;           /* onecycle: rising fraction; default 0.3 */
  float div_factor;          /* onecycle: starts at lr / div_factor; default 25 */
  float final_div_factor;    /* onecycle: ends at lr / div_factor / final_div_factor; 1e4 */

  int epochs;            /* default 1 */
  int batch;             /* default 64 */
  float label_smoothing; /* default 0 */
  float clip_grad_norm;  /* 0 = no clipping (default) */
  uint64_t seed;         /* default 1 */

  /* Input normalisation x' = (x - mean[c]) / std[c]; norm_channels = 0 when
   * the file sets none. One value applies to every channel. */
  int norm_channels;
  float mean[NB_RECIPE_MAX_CHANNELS];
  float std[NB_RECIPE_MAX_CHANNELS];

  /* Augmentation (training batches only). */
  int crop_padding; /* random crop after zero-padding this many pixels; 0 = off */
  int hflip;        /* random horizontal flip */

  /* Token-sequence (text) models: a run of `steps` updates (0 = unset),
   * validation every eval_every steps (0 = only at the end) over
   * eval_batches batches (default 20). */
  int64_t steps;
  int64_t eval_every;
  int eval_batches;
  /* Weight decay only for parameters with at least this many axes (adam,
   * adamw); 0 = every parameter (default), 2 = nanoGPT's rule. */
  int decay_min_dims;
  /* fp32 (default), bf16 or fp16. Whoever builds the training graph opens
   * the autocast scope (nb_graph_set_autocast(g, nb_precision_dtype(p))
   * before nb_model_build: nb_fit, nb_fit_text, nb_evaluate* and `nabla
   * bench` do); nb_recipe_update adds the loss scaling that fp16 needs. */
  nb_precision precision;
  /* 1: recompute activations in the backward pass instead of keeping them
   * (activation checkpointing, nb_graph_recompute_begin): each transformer
   * block and each residual block is a segment. The trainers pass it on as
   * nb_nn.recompute. Less memory for about one more forward pass. */
  int recompute;
} nb_recipe;

/* The recipe a [train] section starts from. */
nb_recipe nb_recipe_defaults(void);

/* The recipe's learning-rate schedule for a run of r->epochs epochs of
 * `steps_per_epoch` updates, ready for nb_schedule_lr() (train.h). */
nb_status nb_recipe_schedule(const nb_recipe *r, int64_t steps_per_epoch, nb_schedule *out);
/* Appends the recipe's update for `loss` to g: the backward pass, gradient
 * clipping when the recipe sets clip_grad_norm (*grad_norm gets the norm
 * node, marked as an output; NULL otherwise; grad_norm may be NULL), and the
 * recipe's optimizer (*opt, freed by the caller). With precision fp16 the
 * loss is scaled before backward and the gradients unscaled before
 * clipping by an nb_grad_scaler with its defaults (optim.h), which skips
 * the update of a step whose gradients overflow. The one place a recipe
 * becomes a training step, so training, benchmarks and summaries agree. */
nb_status nb_recipe_update(const nb_recipe *r, nb_graph *g, nb_tensor *loss, nb_tensor **grad_norm,
                           nb_optimizer **opt);
/* nb_recipe_update for data-parallel training: with more than one rank in
 * `dist` (NULL: one process), or NB_DIST_SELF (nb_dist_averages_grads), the
 * gradients are averaged over the ranks (nb_dist_average_grads) right after
 * backward, before clipping. */
nb_status nb_recipe_update_dist(const nb_recipe *r, nb_graph *g, nb_tensor *loss, nb_dist *dist,
                                nb_tensor **grad_norm, nb_optimizer **opt);

/* "fp32", "bf16", "fp16" ("?" for a bad value). */
const char *nb_precision_name(nb_precision p);
/* Parses "fp32" (also "f32", "float32"), "bf16" ("bfloat16"), "fp16" ("f16",
 * "float16"); NB_ERR_INVALID_ARG naming the choices otherwise. */
nb_status nb_precision_parse(const char *s, nb_precision *out);
/* The autocast dtype of a precision: NB_F32 (off), NB_BF16 or NB_F16. */
nb_dtype nb_precision_dtype(nb_precision p);

/* "adam", "adamw", "sgd" ("?" for a bad value). */
const char *nb_recipe_optimizer_name(nb_recipe_optimizer o);
/* The model-file spelling of a schedule: "constant", "step", "cosine",
 * "onecycle", "warmup_cosine" ("?" for a bad value). */
const char *nb_recipe_schedule_name(nb_schedule_kind s);

/* ---- loading ----------------------------------------------------------------- */

/* Reads and parses a model file. On error *out is NULL and the message reads
 * "PATH:LINE: expected ..., found ...". Free the model with nb_model_free. */
nb_status nb_model_load(const char *path, nb_model **out);
/* Parses model text; `source` names it in error messages (a path, "<string>"). */
nb_status nb_model_parse(const char *text, const char *source, nb_model **out);
void nb_model_free(nb_model *m);

/* ---- inspection ---------------------------------------------------------------- */

/* [net] name (default: the file name without folder and extension). */
const char *nb_model_name(const nb_model *m);
/* Where the model came from (the path or `source`). */
const char *nb_model_source(const nb_model *m);
/* The shape of one example ([net] input, without the batch axis) and its
 * dtype ([net] input_dtype, f32 unless the model starts with an embedding).
 * Returns the rank; shape needs NB_MAX_DIMS entries; dt may be NULL. */
int nb_model_input_shape(const nb_model *m, int64_t *shape, nb_dtype *dt);
/* [net] classes: the size of the output's last axis (0 if unspecified). */
int64_t nb_model_classes(const nb_model *m);
/* The [train] recipe, with defaults for what the file omits. Owned by m. */
const nb_recipe *nb_model_recipe(const nb_model *m);
/* 1 for a token-sequence model ([net] input = T, input_dtype i32 or i64):
 * `nabla train` trains it as a language model (next-token prediction on
 * text, output [batch, T, vocab]). */
int nb_model_is_text(const nb_model *m);
/* 1 if some key of the file says `vocab` ([net] classes = vocab, [embedding]
 * vocab = vocab): the vocabulary comes from the data. */
int nb_model_takes_vocab(const nb_model *m);
/* The vocabulary size that `vocab` stands for: NB_MODEL_DEFAULT_VOCAB until
 * nb_model_set_vocab; 0 when the model takes none. */
int64_t nb_model_vocab(const nb_model *m);
/* Sets the vocabulary size (>= 1) of a model that takes one from the data;
 * NB_ERR_INVALID_ARG for a model without a `vocab` key. */
nb_status nb_model_set_vocab(nb_model *m, int64_t vocab);
/* 1 for [net] tokenizer = bpe: the text is byte-level BPE tokens (data.h's
 * nb_bpe), 0 for the default, one token per distinct byte. */
int nb_model_tokenizer_bpe(const nb_model *m);
/* [net] tokenizer_vocab: the BPE vocabulary size to learn from the
 * training text (0 when the file names a vocabulary instead). */
int64_t nb_model_tokenizer_vocab(const nb_model *m);
/* [net] tokenizer_file: the BPE vocabulary file to read, or NULL. */
const char *nb_model_tokenizer_file(const nb_model *m);
/* Overrides [net] tokenizer_vocab (`nabla train --tokenizer-vocab N`): a
 * BPE model learns a vocabulary of n >= 256 tokens from its training text,
 * even where the file names a tokenizer_file. NB_ERR_INVALID_ARG for a
 * model without [net] tokenizer = bpe or n < 256. */
nb_status nb_model_set_tokenizer_vocab(nb_model *m, int64_t n);
/* What `vocab` means before the data says: Tiny Shakespeare's 65 bytes. */
#define NB_MODEL_DEFAULT_VOCAB 65
/* Number of trainable parameters (elements), as torch's
 * sum(p.numel() for p in model.parameters()) counts them. With adapters
 * attached (nb_model_set_lora) only they train, and only they count. */
nb_status nb_model_param_count(const nb_model *m, int64_t *count);

/* ---- building ---------------------------------------------------------------- */

/* Attaches LoRA adapters (nn.h) to every later build of m: nb_model_build,
 * given an nn without lora of its own, adds adapters to the Linear layers
 * that lora->targets matches and freezes every other parameter
 * (nn->freeze_base), so training, evaluating and summarising the model all
 * see the adapted network and only the adapters train. Targets that match
 * no Linear layer fail the build (nb_nn_finish). The configuration is
 * copied after nb_lora_check; lora NULL detaches. */
nb_status nb_model_set_lora(nb_model *m, const nb_lora *lora);
/* The attached configuration, or NULL. Owned by m. */
const nb_lora *nb_model_lora(const nb_model *m);

/* Overrides the recipe's precision ([train] precision, `--precision`), so
 * that every later training, evaluation and benchmark of m runs in it.
 * NB_ERR_INVALID_ARG for a value outside nb_precision. */
nb_status nb_model_set_precision(nb_model *m, nb_precision p);
/* Sets the recipe's recompute (activation checkpointing; `nabla train
 * --recompute`). */
nb_status nb_model_set_recompute(nb_model *m, int on);

/* ---- placement (model parallelism, docs/distributed.md) ------------------------ */

/* Places layers on devices: `spec` lists NAME=DEVICE pairs separated by
 * commas ("conv1=cpu:1,fc1=cpu:1"), which override the layers' `device`
 * keys; NAME is a layer's name as nb_model_summary prints it (a block's
 * layers by their full name, "layer1.0.conv1"). A layer without a device
 * runs where its input comes from, so "fc1=cpu:1" puts fc1 and every layer
 * after it on cpu:1. An unknown layer or device, or a layer named twice, is
 * NB_ERR_INVALID_ARG naming it and what there is; nothing changes then. NULL or "" clears
 * every placement. */
nb_status nb_model_set_placement(nb_model *m, const char *spec);
/* The device of layer `name` ("" when it has none; NULL for no such layer). */
const char *nb_model_layer_device(const nb_model *m, const char *name);
/* Number of distinct devices the layers name (0: an unplaced model), and
 * the i-th of them in layer order (NULL when out of range). */
int nb_model_device_count(const nb_model *m);
const char *nb_model_device(const nb_model *m, int i);

/* Adds an input node named `name` for a batch of `batch` examples with the
 * model's input shape and dtype, marked NB_MICRO_SPLIT (axis 0 counts
 * examples) for plans with micro-batches. */
nb_tensor *nb_model_new_input(const nb_model *m, nb_graph *g, const char *name, int64_t batch);
/* Builds the network on x ([batch, input...]) into nn->g and sets *logits to
 * its output ([batch, classes] for a classifier). nn->training selects batch
 * statistics and active dropout. A shape error names the layer and its line
 * in the model file; the graph keeps its own error as well. Placed layers
 * (nb_model_set_placement, `device` keys) build under their device; an
 * unplaced one under the previous layer's, and the ones before the first
 * placed layer under the graph's device scope (nb_graph_set_device): the
 * trainers set it to their backend, where the input is fed. */
nb_status nb_model_build(const nb_model *m, const nb_nn *nn, nb_tensor *x, nb_tensor **logits);
/* Positions a token-sequence model takes ([net] input = T, or fewer when
 * its [positional] table is shorter); 0 for other models. */
int64_t nb_model_context(const nb_model *m);
/* Builds the model's decode graph (nn.h, "decoding with a KV cache") into
 * nn->g: ids [1, len] i32 are new tokens at positions pos.. (pos: an i32
 * [1] input), with KV caches of `capacity` <= nb_model_context positions;
 * *logits [1, len, vocab]. Same parameter names as nb_model_build, always
 * in inference mode. A layer with no decode form (convolutions, pools,
 * batch norm, residual blocks) or non-causal attention is an error naming
 * it; see generate.h for running the graph. */
nb_status nb_model_build_decode(const nb_model *m, const nb_nn *nn, nb_tensor *ids, nb_tensor *pos,
                                int64_t capacity, nb_tensor **logits);

/* Writes a table of the layers (name, type, output shape for `batch`
 * examples, parameters), the totals, and the memory plan of one training
 * step (forward + backward + the recipe's optimizer, compiled for the CPU):
 * the arena beside the naive sum of intermediates, and the state. */
nb_status nb_model_summary(const nb_model *m, int64_t batch, FILE *f);

#ifdef __cplusplus
}
#endif

#endif
