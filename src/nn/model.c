/* Model files, second half: building a parsed model into a graph with the
 * nn.h layers, counting its parameters, the learning-rate schedules of its
 * recipe, and the summary table with the training step's memory plan. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "nabla/optim.h"

/* ---- accessors --------------------------------------------------------------- */

const char *nb_model_name(const nb_model *m) { return m ? m->name : ""; }
const char *nb_model_source(const nb_model *m) { return m ? m->source : ""; }
int64_t nb_model_classes(const nb_model *m) { return m ? m->classes : 0; }
const nb_recipe *nb_model_recipe(const nb_model *m) { return m ? &m->recipe : NULL; }

int nb_model_input_shape(const nb_model *m, int64_t *shape, nb_dtype *dt) {
  if (!m) return 0;
  if (shape) memcpy(shape, m->in_shape, (size_t)m->in_ndim * sizeof *shape);
  if (dt) *dt = m->in_dtype;
  return m->in_ndim;
}

nb_tensor *nb_model_new_input(const nb_model *m, nb_graph *g, const char *name, int64_t batch) {
  if (!m || !g) {
    nb_error(NB_ERR_INVALID_ARG, "nb_model_new_input: model and graph are required");
    return NULL;
  }
  int64_t shape[NB_MAX_DIMS];
  shape[0] = batch;
  memcpy(shape + 1, m->in_shape, (size_t)m->in_ndim * sizeof *shape);
  nb_tensor *x = nb_input(g, name, m->in_dtype, m->in_ndim + 1, shape);
  nb_tensor_set_micro(x, NB_MICRO_SPLIT); /* a batch of examples */
  return x;
}

/* ---- schedules --------------------------------------------------------------- */

nb_status nb_recipe_schedule(const nb_recipe *r, int64_t steps_per_epoch, nb_schedule *out) {
  if (!r || !out || steps_per_epoch < 1)
    return nb_error(NB_ERR_INVALID_ARG, "nb_recipe_schedule: recipe, out and steps_per_epoch >= 1 "
                                        "are required");
  int64_t total = steps_per_epoch * (r->epochs > 0 ? r->epochs : 1);
  switch (r->schedule) {
  case NB_SCHEDULE_CONSTANT: *out = nb_schedule_constant(r->lr); break;
  case NB_SCHEDULE_STEP:
    /* the file counts epochs, like torch's StepLR stepped once per epoch */
    *out = nb_schedule_step(r->lr, (int64_t)r->step_size * steps_per_epoch, r->gamma);
    break;
  case NB_SCHEDULE_COSINE: *out = nb_schedule_cosine(r->lr, r->min_lr, total); break;
  case NB_SCHEDULE_ONE_CYCLE:
    *out = nb_schedule_one_cycle(r->lr, total);
    out->pct_start = r->pct_start;
    out->div_factor = r->div_factor;
    out->final_div_factor = r->final_div_factor;
    break;
  case NB_SCHEDULE_WARMUP_COSINE:
    *out = nb_schedule_warmup_cosine(r->lr, r->min_lr, r->warmup, total);
    break;
  default:
    return nb_error(NB_ERR_INVALID_ARG, "nb_recipe_schedule: unknown schedule %d",
                    (int)r->schedule);
  }
  return nb_schedule_check(out);
}

/* ---- building ---------------------------------------------------------------- */

typedef struct layer_rec {
  nb_tensor *out;
  int64_t params;
} layer_rec;

static int same_shape(const nb_tensor *a, const nb_tensor *b) {
  int n = nb_tensor_ndim(a);
  return n == nb_tensor_ndim(b) &&
         !memcmp(nb_tensor_shape(a), nb_tensor_shape(b), (size_t)n * sizeof(int64_t));
}

/* Fits the block input s to the body's output shape (see nb_projection). */
static nb_tensor *shortcut(const nb_nn *nn, const nb_model_layer *open, nb_tensor *s,
                           const nb_tensor *body) {
  nb_graph *g = nn->g;
  char a[96], b[96];
  nb_shape_str(nb_tensor_ndim(s), nb_tensor_shape(s), a, sizeof a);
  nb_shape_str(nb_tensor_ndim(body), nb_tensor_shape(body), b, sizeof b);
  if (open->projection == NB_PROJ_NONE) {
    nb_graph_set_error(g, NB_ERR_SHAPE,
                       "the block's output %s differs from its input %s and projection = none", b,
                       a);
    return NULL;
  }
  if (nb_tensor_ndim(s) != 4 || nb_tensor_ndim(body) != 4 ||
      nb_tensor_shape(s)[0] != nb_tensor_shape(body)[0]) {
    nb_graph_set_error(g, NB_ERR_SHAPE,
                       "a projection shortcut needs [N, C, H, W] input and output, found input %s "
                       "and output %s",
                       a, b);
    return NULL;
  }
  const int64_t *in = nb_tensor_shape(s), *out = nb_tensor_shape(body);
  /* the stride that takes H to H' for a 1x1 window: ceil(H / H') */
  int stride[2];
  for (int i = 0; i < 2; i++) stride[i] = (int)((in[2 + i] + out[2 + i] - 1) / out[2 + i]);
  nb_tensor *y;
  if (open->projection == NB_PROJ_PAD) {
    /* the original CIFAR ResNet's option A: subsample, then zero channels */
    if (out[1] < in[1]) {
      nb_graph_set_error(g, NB_ERR_SHAPE,
                         "projection = pad cannot reduce channels: input %s, block output %s", a,
                         b);
      return NULL;
    }
    y = nb_slice(g, s, 2, 0, in[2], stride[0]);
    y = nb_slice(g, y, 3, 0, in[3], stride[1]);
    int64_t extra = out[1] - in[1];
    int64_t pads[8] = {0, 0, extra / 2, extra - extra / 2, 0, 0, 0, 0};
    y = nb_pad(g, y, pads, 0.0f);
  } else {
    /* torchvision's downsample: Sequential(conv1x1(stride), BatchNorm2d),
     * named so that the parameter names match its state dicts */
    char cn[NB_MODEL_NAME_MAX + 16], bn[NB_MODEL_NAME_MAX + 16];
    snprintf(cn, sizeof cn, "%s.downsample.0", open->name);
    snprintf(bn, sizeof bn, "%s.downsample.1", open->name);
    nb_conv2d_params p = nb_conv2d_defaults();
    p.stride[0] = stride[0];
    p.stride[1] = stride[1];
    int with_bn = open->projection == NB_PROJ_CONV_BN;
    y = nb_nn_conv2d(nn, cn, s, out[1], 1, 1, &p, !with_bn);
    if (with_bn) y = nb_nn_batch_norm(nn, bn, y, 0.1f, 1e-5f);
  }
  if (y && !same_shape(y, body)) {
    nb_shape_str(nb_tensor_ndim(y), nb_tensor_shape(y), a, sizeof a);
    nb_graph_set_error(g, NB_ERR_SHAPE,
                       "the shortcut's %s projection gives %s, which does not match the block's "
                       "output %s",
                       open->projection == NB_PROJ_PAD ? "pad" : "1x1 conv", a, b);
    return NULL;
  }
  return y;
}

static nb_tensor *build_layer(const nb_model *m, const nb_nn *nn, const nb_model_layer *l,
                              nb_tensor *h, nb_tensor **stack, int *depth) {
  nb_graph *g = nn->g;
  switch (l->kind) {
  case NB_LAYER_CONV2D: {
    nb_conv2d_params p = nb_conv2d_defaults();
    for (int i = 0; i < 2; i++) {
      p.stride[i] = l->stride[i];
      p.padding[i] = l->padding[i];
      p.dilation[i] = l->dilation[i];
    }
    p.groups = l->groups;
    h = nb_nn_conv2d(nn, l->name, h, l->out, l->kernel[0], l->kernel[1], &p, l->bias);
    return h ? nb_nn_activation(nn, h, l->act, l->slope) : NULL;
  }
  case NB_LAYER_LINEAR:
    h = l->tie_layer >= 0 ? nb_model_gpt_tied_head(nn, m, l, h)
                          : nb_nn_linear(nn, l->name, h, l->out, l->bias);
    return h ? nb_nn_activation(nn, h, l->act, l->slope) : NULL;
  case NB_LAYER_MAXPOOL2D:
  case NB_LAYER_AVGPOOL2D: {
    nb_pool2d_params p = nb_pool2d_defaults(l->kernel[0], l->kernel[1]);
    for (int i = 0; i < 2; i++) {
      p.stride[i] = l->stride[i];
      p.padding[i] = l->padding[i];
    }
    p.ceil_mode = l->ceil_mode;
    p.count_include_pad = l->count_include_pad;
    return l->kind == NB_LAYER_MAXPOOL2D ? nb_max_pool2d(g, h, &p) : nb_avg_pool2d(g, h, &p);
  }
  case NB_LAYER_GLOBAL_AVGPOOL: return nb_global_avg_pool2d(g, h);
  case NB_LAYER_FLATTEN: return nb_nn_flatten(nn, h);
  case NB_LAYER_BATCHNORM:
    h = nb_nn_batch_norm(nn, l->name, h, l->momentum, l->eps);
    return h ? nb_nn_activation(nn, h, l->act, l->slope) : NULL;
  case NB_LAYER_LAYERNORM: return nb_nn_layer_norm(nn, l->name, h, l->eps);
  case NB_LAYER_DROPOUT: return nb_nn_dropout(nn, l->name, h, l->p);
  case NB_LAYER_ACTIVATION: return nb_nn_activation(nn, h, l->act, l->slope);
  case NB_LAYER_EMBEDDING: return nb_nn_embedding(nn, l->name, h, l->vocab, l->dim);
  case NB_LAYER_POSITIONAL: return nb_model_gpt_positional(nn, l, h);
  case NB_LAYER_TRANSFORMER: return nb_model_gpt_transformer(nn, l, h);
  case NB_LAYER_RESIDUAL: stack[(*depth)++] = h; return h;
  case NB_LAYER_END: {
    const nb_model_layer *open = &m->layers[l->block];
    nb_tensor *s = stack[--(*depth)];
    if (!same_shape(s, h)) s = shortcut(nn, open, s, h);
    if (!s) return NULL;
    return nb_nn_activation(nn, nb_add(g, h, s), open->act, open->slope);
  }
  case NB_LAYER_KIND_COUNT: break;
  }
  nb_graph_set_error(g, NB_ERR_INTERNAL, "unknown layer kind %d", (int)l->kind);
  return NULL;
}

static int64_t params_since(nb_graph *g, int first) {
  int64_t n = 0;
  for (int i = first; i < nb_graph_node_count(g); i++) {
    nb_tensor *t = nb_graph_node(g, i);
    if (nb_tensor_requires_grad(t) && !strcmp(nb_tensor_op_name(t), "variable"))
      n += nb_tensor_numel(t);
  }
  return n;
}

static nb_status build(const nb_model *m, const nb_nn *nn, nb_tensor *x, nb_tensor **logits,
                       layer_rec *rec) {
  if (logits) *logits = NULL;
  if (!m || !nn || !nn->g || !x || !logits)
    return nb_error(NB_ERR_INVALID_ARG, "nb_model_build: model, nn (with a graph), x and logits "
                                        "are required");
  /* [net] init says how this model's weights start, whatever the caller's */
  nb_nn local = *nn;
  if (m->init_set) local.init = m->init;
  /* adapters attached with nb_model_set_lora train alone */
  if (!local.lora && m->has_lora) {
    local.lora = &m->lora;
    local.freeze_base = 1;
  }
  nn = &local;
  nb_graph *g = nn->g;
  int first_node = nb_graph_node_count(g);
  nb_status st = nb_graph_status(g);
  if (st) return nb_error(st, "nb_model_build: the graph already failed: %s", nb_graph_error(g));
  int nd = nb_tensor_ndim(x);
  if (nd != m->in_ndim + 1 ||
      memcmp(nb_tensor_shape(x) + 1, m->in_shape, (size_t)m->in_ndim * sizeof(int64_t)) ||
      nb_tensor_dtype(x) != m->in_dtype) {
    char got[128], want[128];
    nb_shape_str(nd, nb_tensor_shape(x), got, sizeof got);
    nb_shape_str(m->in_ndim, m->in_shape, want, sizeof want);
    return nb_error(NB_ERR_SHAPE, "%s: model '%s' expects input [N, %s %s, found %s %s", m->source,
                    m->name, want + 1, nb_dtype_name(m->in_dtype), got,
                    nb_dtype_name(nb_tensor_dtype(x)));
  }
  nb_tensor **stack = calloc((size_t)(m->n_layers + 1), sizeof *stack);
  if (!stack) return nb_error(NB_ERR_OOM, "nb_model_build: out of memory");
  int depth = 0;
  nb_tensor *h = x;
  /* placement: a layer with a device builds under its scope; the others
   * run where their input comes from: the previous layer's device, and
   * for the layers before the first placed one the caller's scope (the
   * trainers set it to their backend: the model input is fed there). With
   * no scope they are left to the compiler's rules (place.c). */
  char scope[16], cur[16];
  snprintf(scope, sizeof scope, "%s", nb_graph_device(g));
  snprintf(cur, sizeof cur, "%s", scope);
  /* recomputation: each outermost residual block is a segment (the
   * transformer blocks open their own, model_gpt.c), and so is each run of
   * layers marked `recompute = yes`, a marked [residual] counting as its
   * whole block. segment: 0 = none of ours is open, 1 = a residual block's
   * (ends at the [end] that brings depth back to seg_depth), 2 = a run of
   * marked layers' (ends before the next unmarked layer) */
  int segment = 0, seg_depth = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const nb_model_layer *l = &m->layers[i];
    int first = nb_graph_node_count(g);
    if (l->device[0]) snprintf(cur, sizeof cur, "%s", l->device);
    nb_graph_set_device(g, cur);
    int marked = nn->training && l->recompute, block = l->kind == NB_LAYER_RESIDUAL;
    if (!nb_graph_recompute_open(g) && (marked || (block && nn->recompute && depth == 0))) {
      segment = nb_graph_recompute_begin(g) == NB_OK ? (block ? 1 : 2) : 0;
      seg_depth = depth;
    } else if (segment == 2 && marked && block) {
      segment = 1; /* the run goes on through this block's [end] */
      seg_depth = depth;
    }
    h = build_layer(m, nn, l, h, stack, &depth);
    if ((segment == 1 && l->kind == NB_LAYER_END && depth == seg_depth) ||
        (segment == 2 && (i + 1 == m->n_layers || !m->layers[i + 1].recompute))) {
      nb_graph_recompute_end(g);
      segment = 0;
    }
    st = nb_graph_status(g);
    if (st || !h) {
      if (segment) nb_graph_recompute_end(g);
      nb_graph_set_device(g, scope);
      free(stack);
      if (!st)
        return nb_error(NB_ERR_INTERNAL, "%s:%d: [%s %s] failed: %s", m->source, l->line,
                        nb_layer_kind_name(l->kind), l->name, nb_last_error());
      return nb_error(st, "%s:%d: [%s %s]: %s", m->source, l->line, nb_layer_kind_name(l->kind),
                      l->name, nb_graph_error(g));
    }
    if (rec) {
      rec[i].out = h;
      rec[i].params = params_since(g, first);
    }
  }
  free(stack);
  nb_graph_set_device(g, scope);
  st = nb_nn_finish(nn, first_node);
  if (st) return nb_error(st, "%s: %s", m->source, nb_last_error());
  nd = nb_tensor_ndim(h);
  if (m->classes && (nd < 1 || nb_tensor_shape(h)[nd - 1] != m->classes)) {
    char got[128];
    nb_shape_str(nd, nb_tensor_shape(h), got, sizeof got);
    const nb_model_layer *l = &m->layers[m->n_layers - 1];
    return nb_error(NB_ERR_SHAPE,
                    "%s:%d: expected the last layer to output [..., %lld] for classes = %lld, "
                    "found %s",
                    m->source, l->line, (long long)m->classes, (long long)m->classes, got);
  }
  *logits = h;
  return NB_OK;
}

nb_status nb_model_build(const nb_model *m, const nb_nn *nn, nb_tensor *x, nb_tensor **logits) {
  return build(m, nn, x, logits, NULL);
}

/* Builds the model for `batch` into a scratch graph; a training graph
 * recomputes its blocks when `recompute`. */
static nb_status scratch_build(const nb_model *m, int64_t batch, int training, int recompute,
                               nb_graph **g, nb_tensor **x, nb_tensor **y, layer_rec *rec) {
  *x = *y = NULL;
  *g = nb_graph_new();
  if (!*g) return nb_error(NB_ERR_OOM, "out of memory");
  nb_nn nn = {.g = *g,
              .training = training,
              .seed = m->recipe.seed,
              .init = NB_NN_INIT_TORCH,
              .recompute = training && recompute};
  *x = nb_model_new_input(m, *g, "input", batch);
  /* a training step as nb_fit builds it: in the recipe's precision */
  nb_status st =
      nb_graph_set_autocast(*g, training ? nb_precision_dtype(m->recipe.precision) : NB_F32);
  /* placed layers: the first ones run on cpu, where nb_model_summary compiles */
  if (!st && nb_model_device_count(m)) st = nb_graph_set_device(*g, "cpu");
  if (!st) st = build(m, &nn, *x, y, rec);
  if (!st) st = nb_graph_set_device(*g, NULL);
  if (!st) st = nb_graph_set_autocast(*g, NB_F32);
  if (st) {
    nb_graph_free(*g);
    *g = NULL;
  }
  return st;
}

nb_status nb_model_param_count(const nb_model *m, int64_t *count) {
  if (!m || !count)
    return nb_error(NB_ERR_INVALID_ARG, "nb_model_param_count: model and count "
                                        "are required");
  *count = 0;
  nb_graph *g = NULL;
  nb_tensor *x = NULL, *y = NULL;
  nb_status st = scratch_build(m, 1, 0, 0, &g, &x, &y, NULL);
  if (st) return st;
  *count = params_since(g, 0);
  nb_graph_free(g);
  return NB_OK;
}

/* ---- summary ----------------------------------------------------------------- */

/* 1234567 -> "1,234,567" */
static const char *grouped(int64_t v, char *buf, size_t cap) {
  char digits[32];
  snprintf(digits, sizeof digits, "%lld", (long long)(v < 0 ? -v : v));
  size_t n = strlen(digits), o = 0;
  if (v < 0 && o + 1 < cap) buf[o++] = '-';
  for (size_t i = 0; i < n && o + 2 < cap; i++) {
    if (i && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = '\0';
  return buf;
}

static const char *mib(size_t bytes, char *buf, size_t cap) {
  if (bytes < 1024 * 1024)
    snprintf(buf, cap, "%.1f KiB", (double)bytes / 1024.0);
  else
    snprintf(buf, cap, "%.1f MiB", (double)bytes / (1024.0 * 1024.0));
  return buf;
}

/* "conv2d 3x3/2 relu", "maxpool2d 2x2", "add +conv_bn", ... */
static void layer_type(const nb_model *m, const nb_model_layer *l, const nb_tensor *in,
                       const nb_tensor *out, char *buf, size_t cap) {
  const char *kind = nb_layer_kind_name(l->kind);
  char k[32] = "", s[32] = "";
  switch (l->kind) {
  case NB_LAYER_CONV2D:
  case NB_LAYER_MAXPOOL2D:
  case NB_LAYER_AVGPOOL2D:
    if (l->kernel[0] == l->kernel[1])
      snprintf(k, sizeof k, " %dx%d", l->kernel[0], l->kernel[0]);
    else
      snprintf(k, sizeof k, " %dx%d", l->kernel[0], l->kernel[1]);
    if (l->stride[0] != (l->kind == NB_LAYER_CONV2D ? 1 : l->kernel[0]) ||
        l->stride[1] != (l->kind == NB_LAYER_CONV2D ? 1 : l->kernel[1]))
      snprintf(s, sizeof s, "/%d", l->stride[0]);
    break;
  case NB_LAYER_ACTIVATION: kind = nb_nn_act_name(l->act); break;
  case NB_LAYER_DROPOUT: snprintf(k, sizeof k, " %g", (double)l->p); break;
  case NB_LAYER_TRANSFORMER: snprintf(k, sizeof k, " x%d %dh", l->repeat, l->heads); break;
  case NB_LAYER_LINEAR:
    if (l->tie_layer >= 0) snprintf(k, sizeof k, " tied %.20s", l->tie);
    break;
  case NB_LAYER_END: {
    const nb_model_layer *open = &m->layers[l->block];
    kind = "add";
    static const char *const proj[] = {"conv_bn", "conv", "pad", "none"};
    if (in && out && !same_shape(in, out)) snprintf(k, sizeof k, " +%s", proj[open->projection]);
    if (open->act != NB_NN_ACT_NONE) snprintf(s, sizeof s, " %s", nb_nn_act_name(open->act));
    snprintf(buf, cap, "%s%s%s", kind, k, s);
    return;
  }
  default: break;
  }
  /* a residual's activation shows on its [end] row, after the sum */
  const char *act =
      l->kind != NB_LAYER_ACTIVATION && l->kind != NB_LAYER_RESIDUAL && l->act != NB_NN_ACT_NONE
          ? nb_nn_act_name(l->act)
          : "";
  snprintf(buf, cap, "%s%s%s%s%s", kind, k, s, *act ? " " : "", act);
}

static void print_recipe(const nb_recipe *r, FILE *f) {
  fprintf(f, "recipe: %s lr %g", nb_recipe_optimizer_name(r->optimizer), (double)r->lr);
  if (r->optimizer == NB_RECIPE_SGD && r->momentum > 0)
    fprintf(f, " momentum %g%s", (double)r->momentum, r->nesterov ? " nesterov" : "");
  if (r->weight_decay > 0) fprintf(f, " weight_decay %g", (double)r->weight_decay);
  if (r->decay_min_dims > 1) fprintf(f, " (params with >= %d axes)", r->decay_min_dims);
  fprintf(f, ", %s schedule", nb_recipe_schedule_name(r->schedule));
  if (r->warmup) fprintf(f, " (warmup %lld)", (long long)r->warmup);
  if (r->steps)
    fprintf(f, ", %lld steps, batch %d", (long long)r->steps, r->batch);
  else
    fprintf(f, ", %d epoch%s, batch %d", r->epochs, r->epochs == 1 ? "" : "s", r->batch);
  if (r->label_smoothing > 0) fprintf(f, ", label_smoothing %g", (double)r->label_smoothing);
  if (r->clip_grad_norm > 0) fprintf(f, ", clip_grad_norm %g", (double)r->clip_grad_norm);
  if (r->precision != NB_PRECISION_FP32)
    fprintf(f, ", precision %s", nb_precision_name(r->precision));
  fprintf(f, "\n");
  if (r->norm_channels) {
    fprintf(f, "input: normalize mean");
    for (int i = 0; i < r->norm_channels; i++) fprintf(f, " %g", (double)r->mean[i]);
    fprintf(f, " std");
    for (int i = 0; i < r->norm_channels; i++) fprintf(f, " %g", (double)r->std[i]);
    fprintf(f, "\n");
  }
  if (r->crop_padding || r->hflip) {
    fprintf(f, "augment:");
    if (r->crop_padding) fprintf(f, " random crop (padding %d)", r->crop_padding);
    if (r->hflip) fprintf(f, "%s horizontal flip", r->crop_padding ? "," : "");
    fprintf(f, "\n");
  }
}

nb_status nb_recipe_update(const nb_recipe *r, nb_graph *g, nb_tensor *loss, nb_tensor **grad_norm,
                           nb_optimizer **opt) {
  return nb_recipe_update_dist(r, g, loss, NULL, grad_norm, opt);
}

nb_status nb_recipe_update_dist(const nb_recipe *r, nb_graph *g, nb_tensor *loss, nb_dist *dist,
                                nb_tensor **grad_norm, nb_optimizer **opt) {
  if (!r || !g || !loss || !opt)
    return nb_error(NB_ERR_INVALID_ARG, "nb_recipe_update: NULL argument");
  *opt = NULL;
  if (grad_norm) *grad_norm = NULL;
  /* fp16: dynamic loss scaling around backward; the scaler's guard skips
   * the update (clipping to optimizer) of a step that overflowed */
  nb_grad_scaler *gs = NULL;
  nb_status st = r->precision == NB_PRECISION_FP16 ? nb_grad_scaler_new(g, loss, NULL, &gs) : NB_OK;
  if (!st) st = nb_graph_backward(g, gs ? nb_grad_scaler_loss(gs) : loss);
  /* before clipping: every rank then clips and updates with the same global
   * gradient, as one process with the whole batch would */
  if (!st && nb_dist_averages_grads(dist)) st = nb_dist_average_grads(g, dist, 0, NULL);
  if (!st && gs) st = nb_grad_scaler_unscale(gs);
  if (!st && r->clip_grad_norm > 0) {
    nb_tensor *norm = NULL;
    st = nb_clip_grad_norm(g, r->clip_grad_norm, &norm);
    if (!st) nb_tensor_set_output(norm);
    if (!st && grad_norm) *grad_norm = norm;
  }
  if (!st && r->optimizer == NB_RECIPE_SGD) {
    st = nb_optimizer_sgd(g, r->momentum, r->weight_decay, r->nesterov, opt);
  } else if (!st) {
    nb_adam_options ao = {
        r->beta1,         r->beta2, r->eps, r->weight_decay, r->optimizer == NB_RECIPE_ADAMW,
        r->decay_min_dims};
    st = nb_optimizer_adam_ex(g, &ao, opt);
  }
  if (!st && gs) st = nb_grad_scaler_update(gs);
  nb_grad_scaler_free(gs);
  if (st && *opt) {
    nb_optimizer_free(*opt);
    *opt = NULL;
  }
  return st;
}

/* Appends loss, backward and the recipe's optimizer to g and compiles it for
 * the CPU, to report what one training step plans. */
/* Each device's share of a placed training step. */
typedef struct {
  int n;
  char name[8][32];
  size_t arena[8];
  int kernels[8];
} device_shares;

/* Compiles the training step of g (forward already built, y its output)
 * for the CPU and fills its statistics, and, when shares is not NULL, the
 * share of each device the layers are placed on (the first 8). */
static nb_status plan_step(const nb_model *m, nb_graph *g, nb_tensor *y, int64_t batch,
                           nb_plan_stats *stats, int *n_vars, size_t *state_bytes,
                           device_shares *shares) {
  const nb_recipe *r = &m->recipe;
  int nd = nb_tensor_ndim(y);
  int64_t classes = nb_tensor_shape(y)[nd - 1], rows = nb_tensor_numel(y) / classes;
  int64_t ls[2] = {rows, classes};
  (void)batch;
  nb_tensor *labels = nb_input(g, "labels", NB_I64, 1, &rows);
  nb_tensor *loss = nb_cross_entropy(g, nb_reshape(g, y, 2, ls), labels, r->label_smoothing);
  nb_tensor_set_output(loss);
  nb_status st = nb_graph_status(g);
  if (st) return nb_error(st, "%s: loss: %s", m->source, nb_graph_error(g));
  nb_optimizer *opt = NULL;
  st = nb_recipe_update(r, g, loss, NULL, &opt);
  if (st) return st;
  nb_backend *be = NULL;
  nb_state *state = NULL;
  nb_plan *plan = NULL;
  st = nb_backend_new("cpu", &be);
  if (!st) st = nb_state_new(be, &state);
  if (!st) st = nb_compile(g, be, state, NULL, &plan);
  for (int d = 0; !st && shares && d < nb_plan_device_count(plan) && d < 8; d++) {
    nb_plan_device info;
    st = nb_plan_device_info(plan, d, &info);
    if (st) break;
    snprintf(shares->name[d], sizeof shares->name[d], "%s", info.name);
    shares->arena[d] = info.arena_bytes;
    shares->kernels[d] = info.kernels;
    shares->n = d + 1;
  }
  if (!st) {
    *stats = nb_plan_get_stats(plan);
    *n_vars = nb_state_count(state);
    *state_bytes = 0;
    for (int i = 0; i < *n_vars && !st; i++) {
      nb_dtype dt;
      int sn;
      const int64_t *shape;
      st = nb_state_entry(state, i, NULL, &dt, &sn, &shape);
      if (!st) *state_bytes += (size_t)nb_shape_numel(sn, shape) * nb_dtype_size(dt);
    }
  }
  nb_plan_free(plan);
  nb_state_free(state);
  nb_backend_free(be);
  nb_optimizer_free(opt);
  return st;
}

nb_status nb_model_summary(const nb_model *m, int64_t batch, FILE *f) {
  if (!m || !f || batch < 1)
    return nb_error(NB_ERR_INVALID_ARG, "nb_model_summary: model, file and batch >= 1 are "
                                        "required");
  layer_rec *rec = calloc((size_t)m->n_layers, sizeof *rec);
  if (!rec) return nb_error(NB_ERR_OOM, "nb_model_summary: out of memory");
  nb_graph *g = NULL;
  nb_tensor *x = NULL, *y = NULL;
  nb_status st = scratch_build(m, batch, 1, m->recipe.recompute, &g, &x, &y, rec);
  if (st) {
    free(rec);
    return st;
  }
  char b1[128], b2[128];
  nb_shape_str(nb_tensor_ndim(x), nb_tensor_shape(x), b1, sizeof b1);
  fprintf(f, "model %s (%s): input %s %s", m->name, m->source, b1, nb_dtype_name(m->in_dtype));
  if (m->classes) fprintf(f, ", %lld classes", (long long)m->classes);
  if (m->vocab) fprintf(f, " (vocab %lld, set by the data when training)", (long long)m->vocab);
  fprintf(f, "\n");
  print_recipe(&m->recipe, f);

  int wname = 5;
  for (int i = 0; i < m->n_layers; i++) {
    int w = (int)strlen(m->layers[i].name) + 2 * m->layers[i].depth;
    if (w > wname) wname = w;
  }
  fprintf(f, "\n%4s  %-*s  %-20s  %-22s  %12s\n", "#", wname, "layer", "type", "output", "params");
  int64_t total = 0;
  for (int i = 0, ord = 0; i < m->n_layers; i++) {
    const nb_model_layer *l = &m->layers[i];
    const nb_tensor *in = l->kind == NB_LAYER_END ? rec[l->block].out : NULL;
    char type[64], num[16] = "";
    layer_type(m, l, in, rec[i].out, type, sizeof type);
    if (l->kind != NB_LAYER_END) snprintf(num, sizeof num, "%d", ++ord);
    nb_shape_str(nb_tensor_ndim(rec[i].out), nb_tensor_shape(rec[i].out), b1, sizeof b1);
    fprintf(f, "%4s  %*s%-*s  %-20s  %-22s  %12s\n", num, 2 * l->depth, "", wname - 2 * l->depth,
            l->name, type, b1, grouped(rec[i].params, b2, sizeof b2));
    total += rec[i].params;
  }
  fprintf(f, "\nparameters: %s (%s as f32)\n", grouped(total, b1, sizeof b1),
          mib((size_t)total * 4, b2, sizeof b2));

  nb_plan_stats s = {0};
  int n_vars = 0;
  size_t state_bytes = 0;
  device_shares shares = {0};
  st = plan_step(m, g, y, batch, &s, &n_vars, &state_bytes, &shares);
  if (!st) {
    fprintf(f, "training step (forward + backward + %s, batch %lld, cpu): %d nodes, %d kernels\n",
            nb_recipe_optimizer_name(m->recipe.optimizer), (long long)batch, s.nodes, s.kernels);
    fprintf(f, "  intermediates: arena %s, naive %s (%.1f%%)\n", mib(s.arena_bytes, b1, sizeof b1),
            mib(s.naive_bytes, b2, sizeof b2),
            s.naive_bytes ? 100.0 * (double)s.arena_bytes / (double)s.naive_bytes : 0.0);
    /* placed layers: what each device holds (logical CPU devices here) */
    for (int d = 0; s.devices > 1 && d < shares.n; d++)
      fprintf(f, "    on %-6s arena %s, %d kernels\n", shares.name[d],
              mib(shares.arena[d], b1, sizeof b1), shares.kernels[d]);
    fprintf(f, "  state: %d variables, %s (parameters, optimizer moments, running statistics)\n",
            n_vars, mib(state_bytes, b1, sizeof b1));
  }
  /* what recomputation changes, where the model has blocks it applies to */
  int blocks = 0;
  for (int i = 0; i < m->n_layers; i++)
    blocks |= m->layers[i].kind == NB_LAYER_TRANSFORMER || m->layers[i].kind == NB_LAYER_RESIDUAL;
  if (!st && blocks) {
    nb_graph *g2 = NULL;
    nb_plan_stats s2 = {0};
    int other = !m->recipe.recompute;
    st = scratch_build(m, batch, 1, other, &g2, &x, &y, NULL);
    if (!st) st = plan_step(m, g2, y, batch, &s2, &n_vars, &state_bytes, NULL);
    if (!st)
      fprintf(f, "  %s: arena %s, %d kernels\n",
              other ? "recomputing blocks in the backward pass (--recompute)"
                    : "without [train] recompute (blocks keep their activations)",
              mib(s2.arena_bytes, b1, sizeof b1), s2.kernels);
    nb_graph_free(g2);
  }
  nb_graph_free(g);
  free(rec);
  return st;
}
