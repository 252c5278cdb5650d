/* The precision of a training run ([train] precision, `--precision`):
 * names, parsing, the autocast dtype it stands for, and the override. */
#include <string.h>

#include "model_internal.h"

static const struct {
  const char *name, *alias1, *alias2;
  nb_dtype dtype;
} precisions[] = {
    [NB_PRECISION_FP32] = {"fp32", "f32", "float32", NB_F32},
    [NB_PRECISION_BF16] = {"bf16", "bfloat16", "bf16", NB_BF16},
    [NB_PRECISION_FP16] = {"fp16", "f16", "float16", NB_F16},
};
#define N_PRECISIONS ((int)(sizeof precisions / sizeof precisions[0]))

static int valid(nb_precision p) { return (int)p >= 0 && (int)p < N_PRECISIONS; }

const char *nb_precision_name(nb_precision p) { return valid(p) ? precisions[p].name : "?"; }

nb_dtype nb_precision_dtype(nb_precision p) { return valid(p) ? precisions[p].dtype : NB_F32; }

nb_status nb_precision_parse(const char *s, nb_precision *out) {
  if (!s || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_precision_parse: NULL argument");
  for (int i = 0; i < N_PRECISIONS; i++)
    if (!strcmp(s, precisions[i].name) || !strcmp(s, precisions[i].alias1) ||
        !strcmp(s, precisions[i].alias2)) {
      *out = (nb_precision)i;
      return NB_OK;
    }
  return nb_error(NB_ERR_INVALID_ARG, "unknown precision '%s' (expected fp32, bf16 or fp16)", s);
}

nb_status nb_model_set_precision(nb_model *m, nb_precision p) {
  if (!m) return nb_error(NB_ERR_INVALID_ARG, "nb_model_set_precision: model is NULL");
  if (!valid(p))
    return nb_error(NB_ERR_INVALID_ARG, "nb_model_set_precision: %d is not an nb_precision",
                    (int)p);
  m->recipe.precision = p;
  return NB_OK;
}

nb_status nb_model_set_recompute(nb_model *m, int on) {
  if (!m) return nb_error(NB_ERR_INVALID_ARG, "nb_model_set_recompute: model is NULL");
  m->recipe.recompute = on != 0;
  return NB_OK;
}
