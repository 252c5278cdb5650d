/* Confusion matrix, per-class scores and scikit-learn's classification
 * report. The scores are computed with the same float64 operations in the
 * same order as sklearn 1.2 / numpy (including numpy's pairwise summation
 * for averages), so the printed report matches sklearn's byte for byte
 * rather than only to the printed digits, where a value that lands on a
 * rounding boundary could otherwise print differently. */
#include <stdlib.h>
#include <string.h>

#include "nabla/train.h"

struct nb_confusion {
  int classes;
  int64_t total;
  int64_t *m; /* classes x classes, row = true label, column = prediction */
};

nb_status nb_confusion_new(int classes, nb_confusion **out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_confusion_new: NULL out");
  *out = NULL;
  /* the report keeps a few arrays of `classes` entries; the matrix is the
   * big one, so bound classes^2 */
  if (classes < 1 || classes > 46340)
    return nb_error(NB_ERR_INVALID_ARG, "nb_confusion_new: classes must be in [1, 46340] (got %d)",
                    classes);
  nb_confusion *c = calloc(1, sizeof *c);
  if (c) c->m = calloc((size_t)classes * (size_t)classes, sizeof *c->m);
  if (!c || !c->m) {
    free(c);
    return nb_error(NB_ERR_OOM, "nb_confusion_new: out of memory for %d x %d counts", classes,
                    classes);
  }
  c->classes = classes;
  *out = c;
  return NB_OK;
}

void nb_confusion_free(nb_confusion *c) {
  if (!c) return;
  free(c->m);
  free(c);
}

void nb_confusion_reset(nb_confusion *c) {
  if (!c) return;
  memset(c->m, 0, (size_t)c->classes * (size_t)c->classes * sizeof *c->m);
  c->total = 0;
}

int nb_confusion_classes(const nb_confusion *c) { return c ? c->classes : 0; }

nb_status nb_confusion_add(nb_confusion *c, const int64_t *pred, const int64_t *label, int64_t n) {
  if (!c || n < 0 || (n > 0 && (!pred || !label)))
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_confusion_add: need a matrix, n >= 0 and pred/label arrays");
  /* check everything first so that a bad batch adds nothing */
  for (int64_t i = 0; i < n; i++) {
    if (pred[i] < 0 || pred[i] >= c->classes || label[i] < 0 || label[i] >= c->classes)
      return nb_error(NB_ERR_INVALID_ARG,
                      "nb_confusion_add: index %lld has prediction %lld and label %lld; both must "
                      "be in [0, %d)",
                      (long long)i, (long long)pred[i], (long long)label[i], c->classes);
  }
  for (int64_t i = 0; i < n; i++) c->m[label[i] * c->classes + pred[i]]++;
  c->total += n;
  return NB_OK;
}

nb_status nb_confusion_add_counts(nb_confusion *c, const int64_t *counts) {
  if (!c || !counts) return nb_error(NB_ERR_INVALID_ARG, "nb_confusion_add_counts: NULL argument");
  const int64_t n = (int64_t)c->classes * c->classes;
  for (int64_t i = 0; i < n; i++)
    if (counts[i] < 0)
      return nb_error(NB_ERR_INVALID_ARG, "nb_confusion_add_counts: count %lld is %lld (< 0)",
                      (long long)i, (long long)counts[i]);
  for (int64_t i = 0; i < n; i++) {
    c->m[i] += counts[i];
    c->total += counts[i];
  }
  return NB_OK;
}

int64_t nb_confusion_count(const nb_confusion *c, int label, int pred) {
  if (!c || label < 0 || label >= c->classes || pred < 0 || pred >= c->classes) return 0;
  return c->m[(int64_t)label * c->classes + pred];
}

int64_t nb_confusion_total(const nb_confusion *c) { return c ? c->total : 0; }

static int64_t diag_sum(const nb_confusion *c) {
  int64_t s = 0;
  for (int k = 0; k < c->classes; k++) s += c->m[(int64_t)k * c->classes + k];
  return s;
}

double nb_confusion_accuracy(const nb_confusion *c) {
  if (!c || c->total == 0) return 0.0;
  return (double)diag_sum(c) / (double)c->total;
}

/* sklearn's _prf_divide with zero_division=0 */
static double ratio(int64_t num, int64_t den) { return den == 0 ? 0.0 : (double)num / (double)den; }

/* sklearn's F-beta for beta = 1, operation for operation:
 * (1 + beta2) * precision * recall / (beta2 * precision + recall). */
static double f1_of(double p, double r) {
  double denom = 1.0 * p + r;
  if (denom == 0.0) denom = 1.0;
  return 2.0 * p * r / denom;
}

static nb_class_metrics class_metrics(const nb_confusion *c, int k) {
  int64_t tp = c->m[(int64_t)k * c->classes + k], pred = 0, truth = 0;
  for (int j = 0; j < c->classes; j++) {
    pred += c->m[(int64_t)j * c->classes + k];
    truth += c->m[(int64_t)k * c->classes + j];
  }
  nb_class_metrics r;
  r.precision = ratio(tp, pred);
  r.recall = ratio(tp, truth);
  r.f1 = f1_of(r.precision, r.recall);
  r.support = truth;
  return r;
}

nb_status nb_confusion_class(const nb_confusion *c, int k, nb_class_metrics *out) {
  if (!c || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_confusion_class: NULL argument");
  if (k < 0 || k >= c->classes)
    return nb_error(NB_ERR_INVALID_ARG, "nb_confusion_class: class %d out of range [0, %d)", k,
                    c->classes);
  *out = class_metrics(c, k);
  return NB_OK;
}

/* numpy's pairwise_sum for float64 (umath/loops_utils.h): 8 interleaved
 * accumulators up to 128 elements, halves (rounded to multiples of 8)
 * above. np.sum / np.mean / np.average add in exactly this order. */
static double pairwise_sum(const double *a, int64_t n) {
  if (n < 8) {
    double res = 0.;
    for (int64_t i = 0; i < n; i++) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; j++) r[j] = a[j];
    int64_t i;
    for (i = 8; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; j++) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

/* Macro (weighted = 0) or support-weighted average of the per-class scores,
 * as np.average(scores) / np.average(scores, weights=support). */
static nb_class_metrics average(const nb_confusion *c, int weighted) {
  nb_class_metrics out = {0, 0, 0, c ? c->total : 0};
  if (!c) return out;
  int n = c->classes;
  double *v = malloc((size_t)n * 4 * sizeof *v);
  if (!v) return out; /* cannot fail for any realistic class count; zeros are the safe answer */
  double *p = v, *r = v + n, *f = v + 2 * n, *w = v + 3 * n;
  for (int k = 0; k < n; k++) {
    nb_class_metrics m = class_metrics(c, k);
    w[k] = (double)m.support;
    p[k] = weighted ? m.precision * w[k] : m.precision;
    r[k] = weighted ? m.recall * w[k] : m.recall;
    f[k] = weighted ? m.f1 * w[k] : m.f1;
  }
  /* with no samples sklearn returns zero_division (0) for every weighted score */
  double scale = weighted ? pairwise_sum(w, n) : (double)n;
  if (scale != 0) {
    out.precision = pairwise_sum(p, n) / scale;
    out.recall = pairwise_sum(r, n) / scale;
    out.f1 = pairwise_sum(f, n) / scale;
  }
  free(v);
  return out;
}

nb_class_metrics nb_confusion_macro(const nb_confusion *c) { return average(c, 0); }

nb_class_metrics nb_confusion_weighted(const nb_confusion *c) { return average(c, 1); }

/* Characters as Python's len() counts them (code points), so names in UTF-8
 * are padded like sklearn pads them. */
static size_t text_width(const char *s) {
  size_t n = 0;
  for (; *s; s++)
    if (((unsigned char)*s & 0xC0) != 0x80) n++;
  return n;
}

static void pad_left(FILE *f, const char *s, size_t width) {
  for (size_t w = text_width(s); w < width; w++) fputc(' ', f);
  fputs(s, f);
}

static void pad_right(FILE *f, const char *s, size_t width) {
  fputs(s, f);
  for (size_t w = text_width(s); w < width; w++) fputc(' ', f);
}

/* Class names: the caller's or "0", "1", ... (sklearn's "%s" % label). The
 * defaults are written into `store`, which the caller frees. */
static nb_status names_for(const nb_confusion *c, const char *const *names, const char *fn,
                           const char ***out, char **store) {
  *store = NULL;
  const char **v = malloc((size_t)c->classes * sizeof *v);
  if (!v) return nb_error(NB_ERR_OOM, "%s: out of memory", fn);
  if (names) {
    for (int k = 0; k < c->classes; k++) {
      if (!names[k]) {
        free(v);
        return nb_error(NB_ERR_INVALID_ARG, "%s: name of class %d is NULL", fn, k);
      }
      v[k] = names[k];
    }
  } else {
    char *s = malloc((size_t)c->classes * 12);
    if (!s) {
      free(v);
      return nb_error(NB_ERR_OOM, "%s: out of memory", fn);
    }
    for (int k = 0; k < c->classes; k++) {
      snprintf(s + (size_t)k * 12, 12, "%d", k);
      v[k] = s + (size_t)k * 12;
    }
    *store = s;
  }
  *out = v;
  return NB_OK;
}

static nb_status write_status(FILE *f, const char *fn) {
  if (ferror(f)) return nb_error(NB_ERR_IO, "%s: write error", fn);
  return NB_OK;
}

nb_status nb_confusion_report(const nb_confusion *c, FILE *f, const char *const *names,
                              int digits) {
  const char *fn = "nb_confusion_report";
  if (!c || !f) return nb_error(NB_ERR_INVALID_ARG, "%s: NULL matrix or file", fn);
  if (digits < 0 || digits > 15)
    return nb_error(NB_ERR_INVALID_ARG, "%s: digits must be in [0, 15] (got %d)", fn, digits);
  const char **nm;
  char *store;
  nb_status st = names_for(c, names, fn, &nm, &store);
  if (st) return st;
  int n = c->classes;
  /* sklearn: width = max(longest name, len("weighted avg"), digits) */
  size_t width = strlen("weighted avg");
  for (int k = 0; k < n; k++)
    if (text_width(nm[k]) > width) width = text_width(nm[k]);
  if ((size_t)digits > width) width = (size_t)digits;

  pad_left(f, "", width);
  fputc(' ', f);
  const char *headers[4] = {"precision", "recall", "f1-score", "support"};
  for (int i = 0; i < 4; i++) fprintf(f, " %9s", headers[i]);
  fputs("\n\n", f);
  /* sklearn prints "accuracy" only when the labels it is given are exactly
   * the labels present; otherwise the micro average under its own name */
  int all_present = 1;
  for (int k = 0; k < n; k++) {
    nb_class_metrics m = class_metrics(c, k);
    int64_t predicted = 0;
    for (int j = 0; j < n; j++) predicted += c->m[(int64_t)j * n + k];
    if (m.support == 0 && predicted == 0) all_present = 0;
    pad_left(f, nm[k], width);
    fprintf(f, "  %9.*f %9.*f %9.*f %9lld\n", digits, m.precision, digits, m.recall, digits, m.f1,
            (long long)m.support);
  }
  fputc('\n', f);
  int64_t hits = diag_sum(c);
  double mp = ratio(hits, c->total), mr = ratio(hits, c->total), mf = f1_of(mp, mr);
  if (all_present) {
    pad_left(f, "accuracy", width);
    fprintf(f, "  %9s %9s %9.*f %9lld\n", "", "", digits, mf, (long long)c->total);
  } else {
    pad_left(f, "micro avg", width);
    fprintf(f, "  %9.*f %9.*f %9.*f %9lld\n", digits, mp, digits, mr, digits, mf,
            (long long)c->total);
  }
  nb_class_metrics avg[2] = {average(c, 0), average(c, 1)};
  const char *avg_names[2] = {"macro avg", "weighted avg"};
  for (int i = 0; i < 2; i++) {
    pad_left(f, avg_names[i], width);
    fprintf(f, "  %9.*f %9.*f %9.*f %9lld\n", digits, avg[i].precision, digits, avg[i].recall,
            digits, avg[i].f1, (long long)c->total);
  }
  free(nm);
  free(store);
  return write_status(f, fn);
}

nb_status nb_confusion_print(const nb_confusion *c, FILE *f, const char *const *names) {
  const char *fn = "nb_confusion_print";
  if (!c || !f) return nb_error(NB_ERR_INVALID_ARG, "%s: NULL matrix or file", fn);
  const char **nm;
  char *store;
  nb_status st = names_for(c, names, fn, &nm, &store);
  if (st) return st;
  int n = c->classes;
  const char *corner = "true\\pred";
  size_t lw = strlen(corner), cw = 1;
  int64_t biggest = 0;
  for (int64_t i = 0; i < (int64_t)n * n; i++)
    if (c->m[i] > biggest) biggest = c->m[i];
  char num[32];
  cw = (size_t)snprintf(num, sizeof num, "%lld", (long long)biggest);
  for (int k = 0; k < n; k++) {
    size_t w = text_width(nm[k]);
    if (w > lw) lw = w;
    if (w > cw) cw = w;
  }
  pad_right(f, corner, lw);
  for (int k = 0; k < n; k++) {
    fputs("  ", f);
    pad_left(f, nm[k], cw);
  }
  fputc('\n', f);
  for (int r = 0; r < n; r++) {
    pad_right(f, nm[r], lw);
    for (int k = 0; k < n; k++) fprintf(f, "  %*lld", (int)cw, (long long)c->m[(int64_t)r * n + k]);
    fputc('\n', f);
  }
  free(nm);
  free(store);
  return write_status(f, fn);
}
