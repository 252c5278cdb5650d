/* Preprocessing on a whole dataset: scaling, per-channel normalisation,
 * per-feature standardisation and one-hot labels. Statistics accumulate in
 * double so that 50000 CIFAR images do not lose the small digits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/data.h"

static nb_status check_ds(const nb_dataset *d, const char *fn) {
  if (!d) return nb_error(NB_ERR_INVALID_ARG, "%s: NULL dataset", fn);
  if (d->n > 0 && (!d->x || d->example_numel < 1))
    return nb_error(NB_ERR_INVALID_ARG, "%s: dataset has %lld examples but no features", fn,
                    (long long)d->n);
  return NB_OK;
}

nb_status nb_dataset_scale(nb_dataset *d, float lo, float hi) {
  nb_status st = check_ds(d, "nb_dataset_scale");
  if (st) return st;
  if (!(hi != lo) || !isfinite(lo) || !isfinite(hi))
    return nb_error(NB_ERR_INVALID_ARG, "nb_dataset_scale: range [%g, %g] is empty or not finite",
                    (double)lo, (double)hi);
  const float inv = 1.0f / (hi - lo);
  const int64_t total = d->n * d->example_numel;
  for (int64_t i = 0; i < total; i++) d->x[i] = (d->x[i] - lo) * inv;
  return NB_OK;
}

/* Channels: the leading dimension of a CHW-like example, else one. */
static int64_t channels_of(const nb_dataset *d) { return d->ndim >= 2 ? d->shape[0] : 1; }

nb_status nb_dataset_channel_stats(const nb_dataset *d, float *mean, float *std) {
  nb_status st = check_ds(d, "nb_dataset_channel_stats");
  if (st) return st;
  if (!mean || !std) return nb_error(NB_ERR_INVALID_ARG, "nb_dataset_channel_stats: NULL output");
  if (d->n < 1) return nb_error(NB_ERR_INVALID_ARG, "nb_dataset_channel_stats: empty dataset");
  const int64_t C = channels_of(d), plane = d->example_numel / C;
  for (int64_t c = 0; c < C; c++) {
    /* two passes: the one-pass E[x^2] - E[x]^2 cancels badly for small std */
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < d->n; i++) {
      const float *p = d->x + i * d->example_numel + c * plane;
      for (int64_t j = 0; j < plane; j++) sum += p[j];
    }
    const double count = (double)d->n * (double)plane, m = sum / count;
    for (int64_t i = 0; i < d->n; i++) {
      const float *p = d->x + i * d->example_numel + c * plane;
      for (int64_t j = 0; j < plane; j++) sq += (p[j] - m) * (p[j] - m);
    }
    mean[c] = (float)m;
    std[c] = (float)sqrt(sq / count);
  }
  return NB_OK;
}

nb_status nb_dataset_normalize(nb_dataset *d, const float *mean, const float *std) {
  nb_status st = check_ds(d, "nb_dataset_normalize");
  if (st) return st;
  if (!mean || !std) return nb_error(NB_ERR_INVALID_ARG, "nb_dataset_normalize: NULL mean or std");
  const int64_t C = channels_of(d), plane = d->example_numel / C;
  for (int64_t c = 0; c < C; c++)
    if (!(std[c] > 0) || !isfinite(std[c]) || !isfinite(mean[c]))
      return nb_error(NB_ERR_INVALID_ARG,
                      "nb_dataset_normalize: channel %lld has mean %g, std %g (std must be > 0)",
                      (long long)c, (double)mean[c], (double)std[c]);
  for (int64_t i = 0; i < d->n; i++)
    for (int64_t c = 0; c < C; c++) {
      float *p = d->x + i * d->example_numel + c * plane;
      const float m = mean[c], inv = 1.0f / std[c];
      for (int64_t j = 0; j < plane; j++) p[j] = (p[j] - m) * inv;
    }
  return NB_OK;
}

nb_status nb_standardizer_fit(const nb_dataset *d, nb_standardizer *out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_standardizer_fit: NULL output");
  memset(out, 0, sizeof *out);
  nb_status st = check_ds(d, "nb_standardizer_fit");
  if (st) return st;
  if (d->n < 1) return nb_error(NB_ERR_INVALID_ARG, "nb_standardizer_fit: empty dataset");
  const int64_t F = d->example_numel;
  double *acc = calloc((size_t)F, sizeof *acc);
  out->mean = malloc((size_t)F * sizeof(float));
  out->std = malloc((size_t)F * sizeof(float));
  if (!acc || !out->mean || !out->std) {
    free(acc);
    nb_standardizer_free(out);
    return nb_error(NB_ERR_OOM, "nb_standardizer_fit: out of memory");
  }
  /* row-major walk (cache friendly), two passes as in channel_stats */
  for (int64_t i = 0; i < d->n; i++)
    for (int64_t f = 0; f < F; f++) acc[f] += d->x[i * F + f];
  for (int64_t f = 0; f < F; f++) {
    out->mean[f] = (float)(acc[f] / (double)d->n);
    acc[f] = 0;
  }
  for (int64_t i = 0; i < d->n; i++)
    for (int64_t f = 0; f < F; f++) {
      double e = d->x[i * F + f] - (double)out->mean[f];
      acc[f] += e * e;
    }
  for (int64_t f = 0; f < F; f++) {
    double s = sqrt(acc[f] / (double)d->n);
    out->std[f] = s > 0 ? (float)s : 1.0f;
  }
  free(acc);
  out->numel = F;
  return NB_OK;
}

nb_status nb_standardizer_apply(const nb_standardizer *s, nb_dataset *d) {
  if (!s || !s->mean || !s->std)
    return nb_error(NB_ERR_INVALID_ARG, "nb_standardizer_apply: standardizer not fitted");
  nb_status st = check_ds(d, "nb_standardizer_apply");
  if (st) return st;
  if (d->example_numel != s->numel)
    return nb_error(NB_ERR_SHAPE,
                    "nb_standardizer_apply: fitted on %lld features, dataset has %lld per example",
                    (long long)s->numel, (long long)d->example_numel);
  for (int64_t i = 0; i < d->n; i++)
    for (int64_t f = 0; f < s->numel; f++) {
      float *p = d->x + i * s->numel + f;
      *p = (*p - s->mean[f]) / s->std[f];
    }
  return NB_OK;
}

void nb_standardizer_free(nb_standardizer *s) {
  if (!s) return;
  free(s->mean);
  free(s->std);
  memset(s, 0, sizeof *s);
}

nb_status nb_labels_one_hot(const int64_t *labels, int64_t n, int num_classes, float *out) {
  if ((!labels || !out) && n > 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_labels_one_hot: NULL argument");
  if (n < 0 || num_classes < 1)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_labels_one_hot: n = %lld, num_classes = %d (need n >= 0, "
                    "num_classes >= 1)",
                    (long long)n, num_classes);
  for (int64_t i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= num_classes)
      return nb_error(NB_ERR_INVALID_ARG,
                      "nb_labels_one_hot: label %lld at index %lld is outside [0, %d)",
                      (long long)labels[i], (long long)i, num_classes);
  if (n == 0) return NB_OK; /* out may be NULL; memset(NULL, 0, 0) is undefined */
  memset(out, 0, (size_t)n * (size_t)num_classes * sizeof *out);
  for (int64_t i = 0; i < n; i++) out[i * num_classes + labels[i]] = 1.0f;
  return NB_OK;
}
