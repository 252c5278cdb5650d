/* The model-file parser: INI-style text -> nb_model (docs/model-format.md).
 *
 * Every section type has a table of its keys (type, range, required or
 * not), so the same code checks every layer and lists the keys a section
 * accepts when it meets one it does not know. Errors stop at the first
 * problem and read "FILE:LINE: expected ..., found ...": the file is
 * written by a person, and the line plus both halves of the mismatch is
 * what they need to fix it. */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Deepest nesting of residual blocks. */
#define MAX_DEPTH 16
/* Most keys of one section type. */
#define MAX_KEYS 32
/* Most transformer blocks in a model (the repeats of every [transformer]
 * section together): far above any real model (GPT-3 has 96), and low enough
 * that a mistyped or hostile `repeat` fails here instead of building
 * billions of blocks. */
#define MAX_BLOCKS 1024

/* ---- key tables ------------------------------------------------------------- */

typedef enum vtype {
  V_INT,     /* int */
  V_I64,     /* int64_t */
  V_U64,     /* uint64_t */
  V_PAIR,    /* int[2]: "3" or "3, 5" (height, width) */
  V_FLOAT,   /* float */
  V_BOOL,    /* int: 1/0, true/false, yes/no, on/off */
  V_ACT,     /* nb_nn_act */
  V_NAME,    /* char[NB_MODEL_NAME_MAX] */
  V_SHAPE,   /* [net] input */
  V_DTYPE,   /* [net] input_dtype */
  V_OPT,     /* [train] optimizer */
  V_SCHED,   /* [train] schedule */
  V_PROJ,    /* [residual] projection */
  V_BETAS,   /* [train] betas: two floats */
  V_FLOATS,  /* [train] mean, std: one float per channel */
  V_AUGMENT, /* [train] augment: crop<N>, flip */
  V_VOCAB,   /* int64_t >= 1, or `vocab`: the data's vocabulary size */
  V_INIT,    /* [net] init */
  V_PREC,    /* [train] precision */
  V_TOKEN,   /* [net] tokenizer: char or bpe */
  V_PATH,    /* char[256]: a file path */
} vtype;

typedef enum range {
  R_ANY = 0,
  R_POS,    /* > 0 */
  R_NONNEG, /* >= 0 */
  R_GE1,    /* >= 1 */
  R_01,     /* [0, 1) */
  R_01C,    /* [0, 1] */
  R_01O,    /* (0, 1) */
  R_0C1,    /* (0, 1] */
} range;

typedef struct keydef {
  const char *key;
  vtype type;
  size_t off; /* into the section's target: nb_model, nb_recipe or nb_model_layer */
  int required;
  range rng;
  const char *what; /* for "expected key 'out' (output channels)" */
} keydef;

#define NET(k, t, f, req, r, w)                                                                    \
  { k, t, offsetof(nb_model, f), req, r, w }
#define TRN(k, t, f, r, w)                                                                         \
  { k, t, offsetof(nb_recipe, f), 0, r, w }
#define LYR(k, t, f, req, r, w)                                                                    \
  { k, t, offsetof(nb_model_layer, f), req, r, w }

static const keydef net_keys[] = {
    NET("name", V_NAME, name, 0, R_ANY, "the model's name"),
    NET("input", V_SHAPE, in_shape, 1, R_GE1, "the shape of one example: C, H, W or F"),
    NET("input_dtype", V_DTYPE, in_dtype, 0, R_ANY, "f32, i32 or i64"),
    NET("classes", V_VOCAB, classes, 0, R_GE1, "the number of classes, or vocab"),
    NET("init", V_INIT, init, 0, R_ANY, "torch, kaiming, xavier or normal_002"),
    NET("tokenizer", V_TOKEN, tokenizer, 0, R_ANY, "char or bpe"),
    NET("tokenizer_vocab", V_I64, tokenizer_vocab, 0, R_GE1, "the BPE vocabulary size to learn"),
    NET("tokenizer_file", V_PATH, tokenizer_file, 0, R_ANY, "a BPE vocabulary file"),
};

static const keydef train_keys[] = {
    TRN("optimizer", V_OPT, optimizer, R_ANY, "adam, adamw or sgd"),
    TRN("lr", V_FLOAT, lr, R_POS, "learning rate"),
    TRN("momentum", V_FLOAT, momentum, R_01, "sgd momentum"),
    TRN("nesterov", V_BOOL, nesterov, R_ANY, "sgd nesterov"),
    TRN("weight_decay", V_FLOAT, weight_decay, R_NONNEG, "weight decay"),
    TRN("betas", V_BETAS, beta1, R_01, "adam betas"),
    TRN("eps", V_FLOAT, eps, R_POS, "adam epsilon"),
    TRN("schedule", V_SCHED, schedule, R_ANY, "the learning-rate schedule"),
    TRN("warmup", V_I64, warmup, R_NONNEG, "warm-up steps"),
    TRN("step_size", V_INT, step_size, R_GE1, "epochs between decays"),
    TRN("gamma", V_FLOAT, gamma, R_0C1, "decay factor"),
    TRN("min_lr", V_FLOAT, min_lr, R_NONNEG, "final learning rate"),
    TRN("pct_start", V_FLOAT, pct_start, R_01O, "warm-up fraction"),
    TRN("div_factor", V_FLOAT, div_factor, R_GE1, "initial lr = lr / div_factor"),
    TRN("final_div_factor", V_FLOAT, final_div_factor, R_GE1, "final lr = lr / final_div_factor"),
    TRN("epochs", V_INT, epochs, R_GE1, "epochs"),
    TRN("batch", V_INT, batch, R_GE1, "batch size"),
    TRN("label_smoothing", V_FLOAT, label_smoothing, R_01, "label smoothing"),
    TRN("clip_grad_norm", V_FLOAT, clip_grad_norm, R_NONNEG, "gradient norm limit"),
    TRN("seed", V_U64, seed, R_NONNEG, "random seed"),
    TRN("mean", V_FLOATS, mean, R_ANY, "per-channel mean"),
    TRN("std", V_FLOATS, std, R_POS, "per-channel standard deviation"),
    TRN("augment", V_AUGMENT, crop_padding, R_ANY, "crop<N>, flip"),
    TRN("steps", V_I64, steps, R_GE1, "training steps"),
    TRN("eval_every", V_I64, eval_every, R_GE1, "steps between validations"),
    TRN("eval_batches", V_INT, eval_batches, R_GE1, "validation batches"),
    TRN("decay_min_dims", V_INT, decay_min_dims, R_NONNEG, "fewest axes of a decayed parameter"),
    TRN("precision", V_PREC, precision, R_ANY, "fp32, bf16 or fp16"),
    TRN("recompute", V_BOOL, recompute, R_ANY, "recompute activations in the backward pass"),
};

static const keydef conv_keys[] = {
    LYR("out", V_I64, out, 1, R_GE1, "output channels"),
    LYR("kernel", V_PAIR, kernel, 1, R_GE1, "kernel size"),
    LYR("stride", V_PAIR, stride, 0, R_GE1, "stride"),
    LYR("padding", V_PAIR, padding, 0, R_NONNEG, "zero padding"),
    LYR("dilation", V_PAIR, dilation, 0, R_GE1, "dilation"),
    LYR("groups", V_INT, groups, 0, R_GE1, "groups"),
    LYR("bias", V_BOOL, bias, 0, R_ANY, "bias"),
    LYR("activation", V_ACT, act, 0, R_ANY, "activation"),
    LYR("slope", V_FLOAT, slope, 0, R_ANY, "leaky_relu slope"),
};

static const keydef linear_keys[] = {
    /* required unless tie = (checked in close_section) */
    LYR("out", V_I64, out, 0, R_GE1, "output features"),
    LYR("tie", V_NAME, tie, 0, R_ANY, "an earlier [embedding] whose weight is the head"),
    LYR("bias", V_BOOL, bias, 0, R_ANY, "bias"),
    LYR("activation", V_ACT, act, 0, R_ANY, "activation"),
    LYR("slope", V_FLOAT, slope, 0, R_ANY, "leaky_relu slope"),
};

static const keydef maxpool_keys[] = {
    LYR("kernel", V_PAIR, kernel, 1, R_GE1, "window size"),
    LYR("stride", V_PAIR, stride, 0, R_GE1, "stride"),
    LYR("padding", V_PAIR, padding, 0, R_NONNEG, "padding"),
    LYR("ceil_mode", V_BOOL, ceil_mode, 0, R_ANY, "ceil mode"),
};

static const keydef avgpool_keys[] = {
    LYR("kernel", V_PAIR, kernel, 1, R_GE1, "window size"),
    LYR("stride", V_PAIR, stride, 0, R_GE1, "stride"),
    LYR("padding", V_PAIR, padding, 0, R_NONNEG, "padding"),
    LYR("ceil_mode", V_BOOL, ceil_mode, 0, R_ANY, "ceil mode"),
    LYR("count_include_pad", V_BOOL, count_include_pad, 0, R_ANY, "count padding"),
};

static const keydef batchnorm_keys[] = {
    LYR("momentum", V_FLOAT, momentum, 0, R_01C, "running-statistics momentum"),
    LYR("eps", V_FLOAT, eps, 0, R_POS, "epsilon"),
    /* conv -> batch norm -> relu is the common triple: one section fewer */
    LYR("activation", V_ACT, act, 0, R_ANY, "activation"),
    LYR("slope", V_FLOAT, slope, 0, R_ANY, "leaky_relu slope"),
};

static const keydef layernorm_keys[] = {
    LYR("eps", V_FLOAT, eps, 0, R_POS, "epsilon"),
};

static const keydef dropout_keys[] = {
    LYR("p", V_FLOAT, p, 0, R_01, "drop probability"),
};

static const keydef activation_keys[] = {
    LYR("type", V_ACT, act, 1, R_ANY, "the activation: relu, gelu, ..."),
    LYR("slope", V_FLOAT, slope, 0, R_ANY, "leaky_relu slope"),
};

static const keydef embedding_keys[] = {
    LYR("vocab", V_VOCAB, vocab, 1, R_GE1, "vocabulary size, or vocab"),
    LYR("dim", V_I64, dim, 1, R_GE1, "embedding size"),
};

static const keydef positional_keys[] = {
    LYR("context", V_I64, context, 0, R_GE1, "positions in the table"),
};

static const keydef transformer_keys[] = {
    LYR("repeat", V_INT, repeat, 0, R_GE1, "number of blocks"),
    LYR("heads", V_INT, heads, 1, R_GE1, "attention heads"),
    LYR("mlp", V_INT, mlp, 0, R_GE1, "MLP width / model width"),
    LYR("causal", V_BOOL, causal, 0, R_ANY, "causal attention mask"),
    LYR("dropout", V_FLOAT, p, 0, R_01, "residual dropout"),
};

static const keydef residual_keys[] = {
    LYR("activation", V_ACT, act, 0, R_ANY, "activation after the sum"),
    LYR("slope", V_FLOAT, slope, 0, R_ANY, "leaky_relu slope"),
    LYR("projection", V_PROJ, projection, 0, R_ANY, "conv_bn, conv, pad or none"),
};

/* kind: a layer kind, or SEC_NET / SEC_TRAIN. */
enum { SEC_NET = -2, SEC_TRAIN = -1 };

typedef struct secdef {
  const char *type;
  const keydef *keys;
  int kind;
  int nkeys;
} secdef;

#define SEC(t, k, keys)                                                                            \
  { t, keys, k, (int)(sizeof keys / sizeof keys[0]) }

static const secdef sections[] = {
    SEC("net", SEC_NET, net_keys),
    SEC("train", SEC_TRAIN, train_keys),
    SEC("conv2d", NB_LAYER_CONV2D, conv_keys),
    SEC("linear", NB_LAYER_LINEAR, linear_keys),
    SEC("maxpool2d", NB_LAYER_MAXPOOL2D, maxpool_keys),
    SEC("avgpool2d", NB_LAYER_AVGPOOL2D, avgpool_keys),
    {"global_avgpool", NULL, NB_LAYER_GLOBAL_AVGPOOL, 0},
    {"flatten", NULL, NB_LAYER_FLATTEN, 0},
    SEC("batchnorm", NB_LAYER_BATCHNORM, batchnorm_keys),
    SEC("layernorm", NB_LAYER_LAYERNORM, layernorm_keys),
    SEC("dropout", NB_LAYER_DROPOUT, dropout_keys),
    SEC("activation", NB_LAYER_ACTIVATION, activation_keys),
    SEC("embedding", NB_LAYER_EMBEDDING, embedding_keys),
    SEC("residual", NB_LAYER_RESIDUAL, residual_keys),
    {"end", NULL, NB_LAYER_END, 0},
    SEC("positional", NB_LAYER_POSITIONAL, positional_keys),
    SEC("transformer", NB_LAYER_TRANSFORMER, transformer_keys),
};
#define N_SECTIONS ((int)(sizeof sections / sizeof sections[0]))

const char *nb_layer_kind_name(nb_layer_kind k) {
  for (int i = 0; i < N_SECTIONS; i++)
    if (sections[i].kind == (int)k) return sections[i].type;
  return "?";
}

/* ---- parser state ------------------------------------------------------------ */

typedef struct parser {
  const char *src;
  nb_model *m;
  int cap;
  int line;
  /* the open section */
  const secdef *sec;
  int sec_line;
  char label[NB_MODEL_NAME_MAX + 32]; /* "[conv2d conv1]" as written */
  int key_line[MAX_KEYS];             /* where each key was set; 0 = not set */
  int n_mean, n_std;
  /* layers */
  int seen_net, seen_train, train_line, ordinal;
  int stack[MAX_DEPTH]; /* indices of the open residual blocks */
  int depth;
  int device_line;    /* where the open layer's `device` was set; 0 = not set */
  int recompute_line; /* ... and its `recompute` */
  int64_t blocks;     /* transformer blocks so far (MAX_BLOCKS) */
} parser;

static nb_status fail(const parser *p, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static nb_status fail(const parser *p, int line, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return nb_error(NB_ERR_FORMAT, "%s:%d: %s", p->src, line, msg);
}

/* A found value, shortened so that a runaway line keeps the message short. */
static const char *clip(const char *s, char *buf, size_t cap) {
  size_t n = strlen(s);
  if (n < cap) return s;
  snprintf(buf, cap, "%.*s...", (int)(cap - 4), s);
  return buf;
}

static const char *range_text(range r) {
  switch (r) {
  case R_ANY: return "";
  case R_POS: return " > 0";
  case R_NONNEG: return " >= 0";
  case R_GE1: return " >= 1";
  case R_01: return " in [0, 1)";
  case R_01C: return " in [0, 1]";
  case R_01O: return " in (0, 1)";
  case R_0C1: return " in (0, 1]";
  }
  return "";
}

static int in_range(double v, range r) {
  switch (r) {
  case R_ANY: return 1;
  case R_POS: return v > 0;
  case R_NONNEG: return v >= 0;
  case R_GE1: return v >= 1;
  case R_01: return v >= 0 && v < 1;
  case R_01C: return v >= 0 && v <= 1;
  case R_01O: return v > 0 && v < 1;
  case R_0C1: return v > 0 && v <= 1;
  }
  return 0;
}

static int parse_int(const char *s, int64_t *v) {
  char *end;
  errno = 0;
  long long x = strtoll(s, &end, 10);
  if (end == s || *end || errno) return 0;
  *v = x;
  return 1;
}

static int parse_float(const char *s, double *v) {
  char *end;
  errno = 0;
  double x = strtod(s, &end);
  if (end == s || *end || !isfinite(x) || fabs(x) > FLT_MAX) return 0;
  *v = x;
  return 1;
}

/* Splits a value at commas and blanks into at most `max` tokens, in place.
 * Returns the count, or max + 1 if there are more. */
static int split(char *s, char **tok, int max) {
  int n = 0;
  for (char *c = s;;) {
    while (*c == ',' || isspace((unsigned char)*c)) c++;
    if (!*c) break;
    if (n == max) return max + 1;
    tok[n++] = c;
    while (*c && *c != ',' && !isspace((unsigned char)*c)) c++;
    if (*c) *c++ = '\0';
  }
  return n;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
  return s;
}

static int valid_name(const char *s) {
  if (!*s || strlen(s) >= NB_MODEL_NAME_MAX - 32) return 0;
  for (const char *c = s; *c; c++)
    if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.' && *c != '-') return 0;
  return s[0] != '.' && s[strlen(s) - 1] != '.';
}

static nb_model_layer *cur_layer(parser *p) { return &p->m->layers[p->m->n_layers - 1]; }

/* ---- values ------------------------------------------------------------------ */

static nb_status bad_value(const parser *p, const keydef *k, const char *expected,
                           const char *found) {
  char b[80];
  return fail(p, p->line, "expected %s for '%s' in %s, found '%s'", expected, k->key, p->label,
              clip(found, b, sizeof b));
}

static nb_status set_ints(parser *p, const keydef *k, char *value, void *dst) {
  char copy[256];
  snprintf(copy, sizeof copy, "%s", value);
  char *tok[3];
  int n = split(copy, tok, 2), want2 = k->type == V_PAIR;
  char exp[96];
  snprintf(exp, sizeof exp, "%s%s%s", want2 ? "one or two integers (height, width)" : "an integer",
           range_text(k->rng), k->type == V_VOCAB ? " or vocab (the data's vocabulary)" : "");
  if (n < 1 || n > (want2 ? 2 : 1)) return bad_value(p, k, exp, value);
  int64_t v[2];
  for (int i = 0; i < n; i++) {
    if (!parse_int(tok[i], &v[i]) || !in_range((double)v[i], k->rng) ||
        (k->type != V_I64 && k->type != V_U64 && k->type != V_VOCAB &&
         (v[i] > INT32_MAX || v[i] < INT32_MIN)))
      return bad_value(p, k, exp, value);
  }
  if (n == 1) v[1] = v[0];
  switch (k->type) {
  case V_INT: *(int *)dst = (int)v[0]; break;
  case V_I64:
  case V_VOCAB: *(int64_t *)dst = v[0]; break;
  case V_U64: *(uint64_t *)dst = (uint64_t)v[0]; break;
  default: ((int *)dst)[0] = (int)v[0]; ((int *)dst)[1] = (int)v[1];
  }
  return NB_OK;
}

static nb_status set_floats(parser *p, const keydef *k, char *value, float *dst, int min, int max,
                            int *count) {
  char copy[512];
  snprintf(copy, sizeof copy, "%s", value);
  char *tok[NB_RECIPE_MAX_CHANNELS + 1];
  int n = split(copy, tok, max);
  char exp[96];
  if (min == max && min == 1)
    snprintf(exp, sizeof exp, "a number%s", range_text(k->rng));
  else if (min == max)
    snprintf(exp, sizeof exp, "%d numbers%s", min, range_text(k->rng));
  else
    snprintf(exp, sizeof exp, "%d to %d numbers%s", min, max, range_text(k->rng));
  if (n < min || n > max) return bad_value(p, k, exp, value);
  for (int i = 0; i < n; i++) {
    double v;
    if (!parse_float(tok[i], &v) || !in_range(v, k->rng)) return bad_value(p, k, exp, value);
    dst[i] = (float)v;
  }
  if (count) *count = n;
  return NB_OK;
}

static nb_status set_enum(parser *p, const keydef *k, const char *value, const char *const *names,
                          int n, int *dst) {
  for (int i = 0; i < n; i++) {
    if (!strcmp(value, names[i])) {
      *dst = i;
      return NB_OK;
    }
  }
  char exp[256] = "one of ";
  for (int i = 0; i < n; i++) {
    strncat(exp, names[i], sizeof exp - strlen(exp) - 1);
    if (i + 1 < n) strncat(exp, ", ", sizeof exp - strlen(exp) - 1);
  }
  return bad_value(p, k, exp, value);
}

static const char *const opt_names[] = {"adam", "adamw", "sgd"};
static const char *const sched_names[] = {"constant", "step", "cosine", "onecycle",
                                          "warmup_cosine"};
static const char *const proj_names[] = {"conv_bn", "conv", "pad", "none"};
/* in nb_nn_init order */
static const char *const init_names[] = {"torch", "kaiming", "xavier", "normal_002"};

const char *nb_recipe_optimizer_name(nb_recipe_optimizer o) {
  return o >= 0 && o <= NB_RECIPE_SGD ? opt_names[o] : "?";
}

const char *nb_recipe_schedule_name(nb_schedule_kind s) {
  return s >= 0 && s <= NB_SCHEDULE_WARMUP_COSINE ? sched_names[s] : "?";
}

static nb_status set_value(parser *p, const keydef *k, char *value, char *base) {
  void *dst = base + k->off;
  nb_model *m = p->m;
  switch (k->type) {
  case V_INT:
  case V_I64:
  case V_U64:
  case V_PAIR: return set_ints(p, k, value, dst);
  case V_FLOAT: return set_floats(p, k, value, dst, 1, 1, NULL);
  case V_BOOL: {
    static const char *const t[] = {"1", "true", "yes", "on"}, *const f[] = {"0", "false", "no",
                                                                             "off"};
    for (int i = 0; i < 4; i++) {
      if (!strcmp(value, t[i]) || !strcmp(value, f[i])) {
        *(int *)dst = !strcmp(value, t[i]);
        return NB_OK;
      }
    }
    return bad_value(p, k, "a boolean (1/0, true/false, yes/no, on/off)", value);
  }
  case V_ACT: {
    nb_nn_act a;
    if (nb_nn_act_parse(value, &a))
      return bad_value(p, k,
                       "an activation (none, relu, leaky_relu, gelu, gelu_tanh, tanh, sigmoid, "
                       "silu)",
                       value);
    *(nb_nn_act *)dst = a;
    return NB_OK;
  }
  case V_TOKEN:
    if (strcmp(value, "char") && strcmp(value, "bpe")) return bad_value(p, k, "char or bpe", value);
    *(int *)dst = !strcmp(value, "bpe");
    return NB_OK;
  case V_PATH:
    if (strlen(value) >= 256) return bad_value(p, k, "a path shorter than 256 bytes", value);
    snprintf((char *)dst, 256, "%s", value);
    return NB_OK;
  case V_NAME:
    if (!valid_name(value))
      return bad_value(p, k, "a name of letters, digits, '_', '-' and '.'", value);
    snprintf((char *)dst, NB_MODEL_NAME_MAX, "%s", value);
    return NB_OK;
  case V_SHAPE: {
    char copy[256];
    snprintf(copy, sizeof copy, "%s", value);
    char *tok[NB_MAX_DIMS];
    int n = split(copy, tok, NB_MAX_DIMS - 1);
    const char *exp = "1 to 7 integers >= 1 (C, H, W for images, F for features)";
    if (n < 1 || n > NB_MAX_DIMS - 1) return bad_value(p, k, exp, value);
    for (int i = 0; i < n; i++)
      if (!parse_int(tok[i], &m->in_shape[i]) || m->in_shape[i] < 1)
        return bad_value(p, k, exp, value);
    m->in_ndim = n;
    return NB_OK;
  }
  case V_DTYPE: {
    nb_dtype dt;
    if (nb_dtype_parse(value, &dt) || (dt != NB_F32 && dt != NB_I32 && dt != NB_I64))
      return bad_value(p, k, "f32, i32 or i64", value);
    m->in_dtype = dt;
    return NB_OK;
  }
  case V_VOCAB:
    if (strcmp(value, "vocab")) return set_ints(p, k, value, dst);
    /* a placeholder until the data (or NB_MODEL_DEFAULT_VOCAB) fills it */
    *(int64_t *)dst = 0;
    if (p->sec->kind == SEC_NET)
      m->classes_vocab = 1;
    else
      cur_layer(p)->vocab_from_data = 1;
    return NB_OK;
  case V_INIT: {
    int v = 0;
    nb_status st = set_enum(p, k, value, init_names, 4, &v);
    if (!st) {
      m->init = (nb_nn_init)v;
      m->init_set = 1;
    }
    return st;
  }
  case V_PREC:
    if (nb_precision_parse(value, (nb_precision *)dst))
      return bad_value(p, k, "fp32, bf16 or fp16", value);
    return NB_OK;
  case V_OPT: return set_enum(p, k, value, opt_names, 3, (int *)dst);
  case V_SCHED: return set_enum(p, k, value, sched_names, 5, (int *)dst);
  case V_PROJ: return set_enum(p, k, value, proj_names, 4, (int *)dst);
  case V_BETAS: {
    float b[2] = {0, 0};
    nb_status st = set_floats(p, k, value, b, 2, 2, NULL);
    if (!st) {
      m->recipe.beta1 = b[0];
      m->recipe.beta2 = b[1];
    }
    return st;
  }
  case V_FLOATS:
    return set_floats(p, k, value, (float *)dst, 1, NB_RECIPE_MAX_CHANNELS,
                      !strcmp(k->key, "mean") ? &p->n_mean : &p->n_std);
  case V_AUGMENT: {
    char copy[256];
    snprintf(copy, sizeof copy, "%s", value);
    char *tok[8];
    int n = split(copy, tok, 7);
    const char *exp = "a list of crop<N> (random crop after N pixels of padding) and flip";
    if (n < 1 || n > 7) return bad_value(p, k, exp, value);
    m->recipe.crop_padding = 0;
    m->recipe.hflip = 0;
    for (int i = 0; i < n; i++) {
      int64_t c;
      if (!strcmp(tok[i], "flip"))
        m->recipe.hflip = 1;
      else if (!strncmp(tok[i], "crop", 4) && parse_int(tok[i] + 4, &c) && c >= 1 && c <= 1024)
        m->recipe.crop_padding = (int)c;
      else if (strcmp(tok[i], "none"))
        return bad_value(p, k, exp, value);
    }
    return NB_OK;
  }
  }
  return fail(p, p->line, "internal: key '%s' has no parser", k->key);
}

/* ---- sections ---------------------------------------------------------------- */

static int key_index(const secdef *s, const char *key) {
  for (int i = 0; i < s->nkeys; i++)
    if (!strcmp(s->keys[i].key, key)) return i;
  return -1;
}

/* The line where `key` of the open section was set, 0 if it was not. */
static int set_at(const parser *p, const char *key) {
  int i = key_index(p->sec, key);
  return i < 0 ? 0 : p->key_line[i];
}

/* A key that only means something with another setting is an error without
 * it: a silently ignored setting is a bug the user cannot see. */
static nb_status only_with(const parser *p, const char *key, int ok, const char *needs,
                           const char *found) {
  int line = set_at(p, key);
  if (!line || ok) return NB_OK;
  return fail(p, line, "expected '%s' only with %s, found %s", key, needs, found);
}

static nb_status check_train(parser *p) {
  const nb_recipe *r = &p->m->recipe;
  char opt[64], sch[64];
  snprintf(opt, sizeof opt, "optimizer = %s", opt_names[r->optimizer]);
  snprintf(sch, sizeof sch, "schedule = %s", sched_names[r->schedule]);
  int sgd = r->optimizer == NB_RECIPE_SGD, sc = r->schedule;
  nb_status st = NB_OK;
  if (!st) st = only_with(p, "momentum", sgd, "optimizer = sgd", opt);
  if (!st) st = only_with(p, "betas", !sgd, "optimizer = adam or adamw", opt);
  if (!st) st = only_with(p, "eps", !sgd, "optimizer = adam or adamw", opt);
  if (!st && r->nesterov)
    st = only_with(p, "nesterov", sgd && r->momentum > 0, "optimizer = sgd and momentum > 0",
                   sgd ? "momentum = 0" : opt);
  if (!st) st = only_with(p, "step_size", sc == NB_SCHEDULE_STEP, "schedule = step", sch);
  if (!st) st = only_with(p, "gamma", sc == NB_SCHEDULE_STEP, "schedule = step", sch);
  if (!st)
    st = only_with(p, "min_lr", sc == NB_SCHEDULE_COSINE || sc == NB_SCHEDULE_WARMUP_COSINE,
                   "schedule = cosine or warmup_cosine", sch);
  if (!st) st = only_with(p, "pct_start", sc == NB_SCHEDULE_ONE_CYCLE, "schedule = onecycle", sch);
  if (!st) st = only_with(p, "div_factor", sc == NB_SCHEDULE_ONE_CYCLE, "schedule = onecycle", sch);
  if (!st)
    st = only_with(p, "final_div_factor", sc == NB_SCHEDULE_ONE_CYCLE, "schedule = onecycle", sch);
  if (!st)
    st = only_with(p, "warmup", sc == NB_SCHEDULE_WARMUP_COSINE,
                   "schedule = "
                   "warmup_cosine",
                   sch);
  /* token-sequence models count steps, the others epochs */
  int text = nb_model_is_text(p->m);
  const char *seq = "a token-sequence model ([net] input = T, input_dtype = i32 or i64)";
  if (!st) st = only_with(p, "steps", text, seq, "another input");
  if (!st) st = only_with(p, "eval_every", text, seq, "another input");
  if (!st) st = only_with(p, "eval_batches", text, seq, "another input");
  if (!st && text)
    st = only_with(p, "epochs", 0, "image and feature models ('steps' for token sequences)",
                   "a token-sequence input");
  if (!st)
    st =
        only_with(p, "decay_min_dims", !sgd && r->weight_decay > 0,
                  "optimizer = adam or adamw and weight_decay > 0", sgd ? opt : "weight_decay = 0");
  if (st) return st;
  if (set_at(p, "min_lr") && r->min_lr > r->lr)
    return fail(p, set_at(p, "min_lr"), "expected min_lr <= lr (%g), found min_lr = %g",
                (double)r->lr, (double)r->min_lr);
  if (sc == NB_SCHEDULE_WARMUP_COSINE && r->warmup < 1)
    return fail(p, set_at(p, "warmup") ? set_at(p, "warmup") : p->sec_line,
                "expected key 'warmup' >= 1 (warm-up steps) with schedule = warmup_cosine, "
                "found %s",
                set_at(p, "warmup") ? "warmup = 0" : "none");
  /* normalisation: as many means as stds, one or one per input channel */
  if (p->n_mean != p->n_std) {
    const char *given = p->n_mean > p->n_std ? "mean" : "std";
    const char *other = p->n_mean > p->n_std ? "std" : "mean";
    int given_n = p->n_mean > p->n_std ? p->n_mean : p->n_std;
    int other_n = p->n_mean > p->n_std ? p->n_std : p->n_mean;
    return fail(p, set_at(p, given), "expected '%s' with as many values as '%s' (%d), found %d",
                other, given, given_n, other_n);
  }
  if (p->n_mean) {
    int64_t c = p->m->in_shape[0];
    if (p->n_mean != 1 && (p->m->in_ndim < 2 || p->n_mean != c))
      return fail(p, set_at(p, "mean"),
                  "expected 1 value or one per input channel (%lld) for 'mean', found %d",
                  (long long)c, p->n_mean);
    p->m->recipe.norm_channels = p->n_mean;
  }
  return NB_OK;
}

/* [linear]: `out`, or `tie` to an earlier [embedding] (no out, no bias). */
static nb_status close_linear(parser *p, nb_model_layer *l) {
  int tie = set_at(p, "tie");
  if (!tie) {
    if (!set_at(p, "out"))
      return fail(p, p->sec_line, "expected key 'out' (output features) in %s, found none",
                  p->label);
    return NB_OK;
  }
  if (set_at(p, "out"))
    return fail(p, set_at(p, "out"),
                "expected no 'out' with tie = %s (the embedding's vocabulary is the output), "
                "found out = %lld",
                l->tie, (long long)l->out);
  if (set_at(p, "bias") && l->bias)
    return fail(p, set_at(p, "bias"),
                "expected bias = no with tie = %s (a tied head has no "
                "bias), found bias = yes",
                l->tie);
  l->bias = 0;
  const nb_model *m = p->m;
  for (int i = 0; i < m->n_layers - 1; i++) {
    const nb_model_layer *o = &m->layers[i];
    if (o->kind == NB_LAYER_END || strcmp(o->name, l->tie)) continue;
    if (o->kind != NB_LAYER_EMBEDDING)
      return fail(p, tie,
                  "expected 'tie' to name an [embedding] layer, found '%s', a [%s] at "
                  "line %d",
                  l->tie, nb_layer_kind_name(o->kind), o->line);
    l->tie_layer = i;
    return NB_OK;
  }
  return fail(p, tie,
              "expected 'tie' to name an earlier [embedding] layer, found '%s' (no layer "
              "of that name above)",
              l->tie);
}

/* Checks made when a section ends: required keys, settings that depend on
 * each other, and defaults that depend on other keys. */
static nb_status close_section(parser *p) {
  const secdef *s = p->sec;
  if (!s) return NB_OK;
  for (int i = 0; i < s->nkeys; i++) {
    if (s->keys[i].required && !p->key_line[i])
      return fail(p, p->sec_line, "expected key '%s' (%s) in %s, found none", s->keys[i].key,
                  s->keys[i].what, p->label);
  }
  if (s->kind == SEC_TRAIN) return check_train(p);
  if (s->kind < 0) return NB_OK;
  nb_model_layer *l = cur_layer(p);
  if (set_at(p, "slope") && l->act != NB_NN_ACT_LEAKY_RELU)
    return fail(p, set_at(p, "slope"), "expected 'slope' only with leaky_relu, found %s = %s",
                s->kind == NB_LAYER_ACTIVATION ? "type" : "activation", nb_nn_act_name(l->act));
  if (s->kind == NB_LAYER_MAXPOOL2D || s->kind == NB_LAYER_AVGPOOL2D) {
    if (!set_at(p, "stride")) memcpy(l->stride, l->kernel, sizeof l->stride);
    /* PyTorch's rule: a window must hold at least one real element */
    for (int a = 0; a < 2; a++)
      if (l->padding[a] > l->kernel[a] / 2)
        return fail(p, set_at(p, "padding"),
                    "expected padding <= kernel / 2 (%d) in %s, found padding = %d",
                    l->kernel[a] / 2, p->label, l->padding[a]);
  }
  if (s->kind == NB_LAYER_LINEAR) {
    nb_status st = close_linear(p, l);
    if (st) return st;
  }
  if (s->kind == NB_LAYER_TRANSFORMER && !set_at(p, "dropout")) l->p = 0.0f;
  if (s->kind == NB_LAYER_TRANSFORMER && (p->blocks += l->repeat) > MAX_BLOCKS)
    return fail(p, set_at(p, "repeat") ? set_at(p, "repeat") : p->sec_line,
                "expected at most %d transformer blocks in the model, found %lld with repeat = %d "
                "in %s",
                MAX_BLOCKS, (long long)p->blocks, l->repeat, p->label);
  if (s->kind == NB_LAYER_POSITIONAL && !set_at(p, "context")) {
    if (!nb_model_is_text(p->m))
      return fail(p, p->sec_line,
                  "expected key 'context' (positions in the table) in %s, found none (only a "
                  "token-sequence [net] input gives a default)",
                  p->label);
    l->context = p->m->in_shape[0];
  }
  if (s->kind == NB_LAYER_EMBEDDING && p->m->in_dtype == NB_F32)
    return fail(p, p->sec_line,
                "expected integer token ids before %s ([net] input_dtype = i64 or i32), "
                "found input_dtype = f32",
                p->label);
  return NB_OK;
}

static nb_status grow(parser *p) {
  if (p->m->n_layers < p->cap) return NB_OK;
  int cap = p->cap ? 2 * p->cap : 16;
  nb_model_layer *l = realloc(p->m->layers, (size_t)cap * sizeof *l);
  if (!l) return nb_error(NB_ERR_OOM, "%s: out of memory", p->src);
  p->m->layers = l;
  p->cap = cap;
  return NB_OK;
}

static void layer_defaults(nb_model_layer *l, nb_layer_kind kind, int line) {
  memset(l, 0, sizeof *l);
  l->kind = kind;
  l->line = line;
  l->stride[0] = l->stride[1] = 1;
  l->dilation[0] = l->dilation[1] = 1;
  l->groups = 1;
  l->bias = 1;
  l->act = NB_NN_ACT_NONE;
  l->slope = 0.01f; /* torch.nn.LeakyReLU */
  l->count_include_pad = 1;
  l->momentum = 0.1f; /* torch.nn.BatchNorm2d */
  l->eps = 1e-5f;
  l->p = 0.5f; /* torch.nn.Dropout */
  l->projection = NB_PROJ_CONV_BN;
  l->block = -1;
  l->tie_layer = -1;
  l->repeat = 1;
  l->mlp = 4; /* GPT-2's MLP width */
  l->causal = 1;
}

static nb_status open_layer(parser *p, int kind, const char *name) {
  nb_model *m = p->m;
  if (kind == NB_LAYER_END) {
    if (name) return fail(p, p->line, "expected [end] without a name, found '%s'", name);
    if (!p->depth)
      return fail(p, p->line,
                  "expected [end] only to close a [residual] block, found no open "
                  "block");
  }
  nb_status st = grow(p);
  if (st) return st;
  int idx = m->n_layers++;
  nb_model_layer *l = &m->layers[idx];
  layer_defaults(l, (nb_layer_kind)kind, p->line);
  if (kind == NB_LAYER_END) {
    int open = p->stack[--p->depth];
    l->block = open;
    m->layers[open].block = idx;
    l->depth = p->depth;
    memcpy(l->name, m->layers[open].name, sizeof l->name);
    return NB_OK;
  }
  p->ordinal++;
  l->depth = p->depth;
  char local[NB_MODEL_NAME_MAX];
  if (name)
    snprintf(local, sizeof local, "%s", name);
  else
    snprintf(local, sizeof local, "layer%d", p->ordinal);
  const char *prefix = p->depth ? m->layers[p->stack[p->depth - 1]].name : "";
  if (strlen(prefix) + strlen(local) + 2 > NB_MODEL_NAME_MAX - 24)
    return fail(p, p->line, "expected a full layer name of at most %d characters, found '%s.%s'",
                NB_MODEL_NAME_MAX - 24, prefix, local);
  char full[2 * NB_MODEL_NAME_MAX + 2]; /* fits by the check above */
  snprintf(full, sizeof full, "%s%s%s", prefix, *prefix ? "." : "", local);
  memcpy(l->name, full, strlen(full) + 1);
  for (int i = 0; i < idx; i++) {
    const nb_model_layer *o = &m->layers[i];
    if (o->kind != NB_LAYER_END && !strcmp(o->name, l->name))
      return fail(p, p->line,
                  "expected a new layer name, found '%s'%s (already the name of the "
                  "[%s] at line %d)",
                  l->name, name ? "" : ", the automatic name of this layer",
                  nb_layer_kind_name(o->kind), o->line);
  }
  if (kind == NB_LAYER_RESIDUAL) {
    if (p->depth == MAX_DEPTH)
      return fail(p, p->line, "expected residual blocks nested at most %d deep, found deeper",
                  MAX_DEPTH);
    p->stack[p->depth++] = idx;
  }
  return NB_OK;
}

static nb_status open_section(parser *p, char *header) {
  nb_status st = close_section(p);
  if (st) return st;
  char b[80];
  size_t n = strlen(header);
  if (header[n - 1] != ']')
    return fail(p, p->line, "expected ']' at the end of a section header, found '%s'",
                clip(header, b, sizeof b));
  header[n - 1] = '\0';
  char copy[256];
  snprintf(copy, sizeof copy, "%s", header + 1);
  char *tok[3];
  int nt = split(header + 1, tok, 2);
  if (nt == 0) return fail(p, p->line, "expected a section type inside [ ], found '[]'");
  if (nt > 2) /* split() stops at the third word without returning it */
    return fail(p, p->line, "expected [TYPE] or [TYPE NAME], found more words in '[%s]'",
                clip(copy, b, sizeof b));
  const secdef *s = NULL;
  for (int i = 0; i < N_SECTIONS && !s; i++)
    if (!strcmp(sections[i].type, tok[0])) s = &sections[i];
  if (!s)
    return fail(p, p->line,
                "expected a section type (net, train, conv2d, linear, maxpool2d, avgpool2d, "
                "global_avgpool, flatten, batchnorm, layernorm, dropout, activation, embedding, "
                "residual, end, positional, transformer), found [%s]",
                clip(tok[0], b, sizeof b));
  const char *name = nt == 2 ? tok[1] : NULL;
  if (s->kind == SEC_NET && p->seen_net)
    return fail(p, p->line, "expected one [net] section, found a second");
  if (s->kind != SEC_NET && !p->seen_net)
    return fail(p, p->line, "expected [net] as the first section, found [%s]", s->type);
  if (s->kind == SEC_TRAIN && p->seen_train)
    return fail(p, p->line,
                "expected one [train] section, found a second (the first is at line "
                "%d)",
                p->train_line);
  if (name && s->kind < 0)
    return fail(p, p->line, "expected [%s] without a name, found '%s'", s->type,
                clip(name, b, sizeof b));
  if (name && !valid_name(name))
    return fail(p, p->line,
                "expected a layer name of letters, digits, '_', '-' and '.', found '%s'",
                clip(name, b, sizeof b));
  p->sec = s;
  p->sec_line = p->line;
  memset(p->key_line, 0, sizeof p->key_line);
  p->device_line = 0;
  p->recompute_line = 0;
  snprintf(p->label, sizeof p->label, "[%s%s%s]", s->type, name ? " " : "", name ? name : "");
  if (s->kind == SEC_NET) {
    p->seen_net = 1;
    return NB_OK;
  }
  if (s->kind == SEC_TRAIN) {
    p->seen_train = 1;
    p->train_line = p->line;
    return NB_OK;
  }
  return open_layer(p, s->kind, name);
}

/* `device` (model parallelism) and `recompute` (activation checkpointing)
 * are keys of every layer section but [end]. */
static int takes_device(const parser *p) {
  return p->sec->kind >= 0 && p->sec->kind != NB_LAYER_END;
}

static const keydef recompute_key =
    LYR("recompute", V_BOOL, recompute, 0, R_ANY, "recompute it in the backward pass");

static nb_status set_recompute(parser *p, char *value) {
  if (p->recompute_line)
    return fail(p, p->line, "expected 'recompute' once in %s, found it again (first at line %d)",
                p->label, p->recompute_line);
  if (!*value)
    return fail(p, p->line, "expected a value (a boolean) after 'recompute =', found nothing");
  p->recompute_line = p->line;
  return set_value(p, &recompute_key, value, (char *)cur_layer(p));
}

static nb_status set_device(parser *p, const char *value) {
  char b[80];
  if (p->device_line)
    return fail(p, p->line, "expected 'device' once in %s, found it again (first at line %d)",
                p->label, p->device_line);
  if (!*value)
    return fail(p, p->line, "expected a value (a device) after 'device =', found nothing");
  nb_model_layer *l = cur_layer(p);
  if (nb_device_canonical(value, l->device, sizeof l->device))
    return fail(p, p->line, "expected a device (cpu, cpu:N, cuda:N) for 'device' in %s, found '%s'",
                p->label, clip(value, b, sizeof b));
  p->device_line = p->line;
  return NB_OK;
}

static nb_status set_key(parser *p, char *line) {
  char b[80];
  char *eq = strchr(line, '=');
  if (!eq)
    return fail(p, p->line, "expected 'key = value' or a [section] header, found '%s'",
                clip(line, b, sizeof b));
  if (!p->sec)
    return fail(p, p->line, "expected a [net] section before any key, found '%s'",
                clip(line, b, sizeof b));
  *eq = '\0';
  char *key = trim(line), *value = trim(eq + 1);
  if (!*key) return fail(p, p->line, "expected a key before '=', found nothing");
  int k = key_index(p->sec, key);
  if (k < 0 && takes_device(p) && !strcmp(key, "device")) return set_device(p, value);
  if (k < 0 && takes_device(p) && !strcmp(key, "recompute")) return set_recompute(p, value);
  if (k < 0) {
    char keys[512] = "";
    for (int i = 0; i < p->sec->nkeys; i++) {
      strncat(keys, p->sec->keys[i].key, sizeof keys - strlen(keys) - 1);
      if (i + 1 < p->sec->nkeys) strncat(keys, ", ", sizeof keys - strlen(keys) - 1);
    }
    if (takes_device(p))
      strncat(keys, p->sec->nkeys ? ", device, recompute" : "device, recompute",
              sizeof keys - strlen(keys) - 1);
    if (!*keys)
      return fail(p, p->line, "expected no keys in %s, found '%s'", p->label,
                  clip(key, b, sizeof b));
    return fail(p, p->line, "expected a key of %s (%s), found '%s'", p->label, keys,
                clip(key, b, sizeof b));
  }
  if (p->key_line[k])
    return fail(p, p->line, "expected '%s' once in %s, found it again (first at line %d)", key,
                p->label, p->key_line[k]);
  if (!*value)
    return fail(p, p->line, "expected a value (%s) after '%s =', found nothing",
                p->sec->keys[k].what, key);
  p->key_line[k] = p->line;
  char *base = p->sec->kind == SEC_NET     ? (char *)p->m
               : p->sec->kind == SEC_TRAIN ? (char *)&p->m->recipe
                                           : (char *)cur_layer(p);
  return set_value(p, &p->sec->keys[k], value, base);
}

/* ---- entry points ------------------------------------------------------------ */

nb_recipe nb_recipe_defaults(void) {
  nb_recipe r;
  memset(&r, 0, sizeof r);
  r.optimizer = NB_RECIPE_ADAM;
  r.lr = 1e-3f;
  r.beta1 = 0.9f;
  r.beta2 = 0.999f;
  r.eps = 1e-8f;
  r.schedule = NB_SCHEDULE_CONSTANT;
  r.step_size = 30;
  r.gamma = 0.1f;
  r.pct_start = 0.3f;
  r.div_factor = 25.0f;
  r.final_div_factor = 1e4f;
  r.epochs = 1;
  r.batch = 64;
  r.seed = 1;
  r.eval_batches = 20;
  for (int i = 0; i < NB_RECIPE_MAX_CHANNELS; i++) r.std[i] = 1.0f;
  return r;
}

/* "models/mnist_cnn.cfg" -> "mnist_cnn"; "<string>" -> "model". */
static void default_name(const char *src, char *out, size_t cap) {
  const char *base = strrchr(src, '/');
  base = base ? base + 1 : src;
  size_t n = strcspn(base, ".");
  snprintf(out, cap, "%.*s", (int)n, base);
  if (!valid_name(out)) snprintf(out, cap, "model");
}

static nb_status parse_all(parser *p, const char *text) {
  const char *c = text;
  /* one buffer as long as the whole text holds any line */
  char *buf = malloc(strlen(text) + 1);
  if (!buf) return nb_error(NB_ERR_OOM, "%s: out of memory", p->src);
  nb_status st = NB_OK;
  while (*c && !st) {
    p->line++;
    size_t n = strcspn(c, "\n");
    memcpy(buf, c, n);
    buf[n] = '\0';
    c += n + (c[n] == '\n');
    buf[strcspn(buf, "#;")] = '\0'; /* comments run to the end of the line */
    char *s = trim(buf);
    if (!*s) continue;
    st = s[0] == '[' ? open_section(p, s) : set_key(p, s);
  }
  free(buf);
  if (st) return st;
  st = close_section(p);
  if (st) return st;
  int last = p->line ? p->line : 1;
  if (!p->seen_net) return fail(p, last, "expected a [net] section, found none");
  if (p->depth) {
    const nb_model_layer *b = &p->m->layers[p->stack[p->depth - 1]];
    return fail(p, b->line, "expected [end] to close [residual] '%s', found the end of the file",
                b->name);
  }
  if (p->m->n_layers == 0)
    return fail(p, last, "expected at least one layer section after [net], found none");
  /* a BPE vocabulary is learned (tokenizer_vocab) or read (tokenizer_file),
   * and only a text model has one */
  const nb_model *mm = p->m;
  if ((mm->tokenizer_vocab || mm->tokenizer_file[0]) && !mm->tokenizer)
    return fail(p, last, "expected [net] tokenizer = bpe with tokenizer_vocab or tokenizer_file");
  if (mm->tokenizer && !mm->tokenizer_vocab == !mm->tokenizer_file[0])
    return fail(p, last,
                "expected exactly one of [net] tokenizer_vocab = N (learn a vocabulary of N "
                "tokens from the training text) or tokenizer_file = PATH with tokenizer = bpe");
  if (mm->tokenizer && mm->tokenizer_vocab && mm->tokenizer_vocab < 256)
    return fail(p, last, "expected [net] tokenizer_vocab >= 256 (the 256 bytes), found %lld",
                (long long)mm->tokenizer_vocab);
  if (mm->tokenizer && !nb_model_is_text(mm))
    return fail(p, last,
                "expected a text model ([net] input = T, input_dtype = i32) with "
                "tokenizer = bpe");
  /* `vocab` stands for the data's vocabulary; until the data is read, for
   * NB_MODEL_DEFAULT_VOCAB (so summaries and param counts work) */
  int takes = p->m->classes_vocab;
  for (int i = 0; i < p->m->n_layers; i++) takes |= p->m->layers[i].vocab_from_data;
  if (takes) {
    /* a BPE vocabulary learned on the fly has the size the file asks for */
    int64_t v = mm->tokenizer_vocab ? mm->tokenizer_vocab : NB_MODEL_DEFAULT_VOCAB;
    p->m->vocab = v;
    return nb_model_set_vocab(p->m, v);
  }
  return NB_OK;
}

nb_status nb_model_parse(const char *text, const char *source, nb_model **out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_model_parse: out is NULL");
  *out = NULL;
  if (!text) return nb_error(NB_ERR_INVALID_ARG, "nb_model_parse: text is NULL");
  if (!source) source = "<string>";
  nb_model *m = calloc(1, sizeof *m);
  if (!m || !(m->source = malloc(strlen(source) + 1))) {
    free(m);
    return nb_error(NB_ERR_OOM, "nb_model_parse: out of memory");
  }
  strcpy(m->source, source);
  m->in_dtype = NB_F32;
  m->recipe = nb_recipe_defaults();
  parser p;
  memset(&p, 0, sizeof p);
  p.src = m->source;
  p.m = m;
  nb_status st = parse_all(&p, text);
  if (st) {
    nb_model_free(m);
    return st;
  }
  if (!m->name[0]) default_name(m->source, m->name, sizeof m->name);
  *out = m;
  return NB_OK;
}

nb_status nb_model_load(const char *path, nb_model **out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_model_load: out is NULL");
  *out = NULL;
  if (!path) return nb_error(NB_ERR_INVALID_ARG, "nb_model_load: path is NULL");
  FILE *f = fopen(path, "rb");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  char *text = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      cap = cap ? 2 * cap : 8192;
      char *t = realloc(text, cap);
      if (!t) {
        free(text);
        fclose(f);
        return nb_error(NB_ERR_OOM, "%s: out of memory", path);
      }
      text = t;
    }
    size_t n = fread(text + len, 1, 4096, f);
    len += n;
    if (n < 4096) break;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    free(text);
    return nb_error(NB_ERR_IO, "%s: read error", path);
  }
  text[len] = '\0';
  size_t nul = strlen(text);
  if (nul != len) {
    free(text);
    return nb_error(NB_ERR_FORMAT, "%s: expected a text file, found a NUL byte at offset %zu", path,
                    nul);
  }
  nb_status st = nb_model_parse(text, path, out);
  free(text);
  return st;
}

void nb_model_free(nb_model *m) {
  if (!m) return;
  free(m->layers);
  free(m->source);
  free(m);
}
