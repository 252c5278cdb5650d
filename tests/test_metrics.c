/* Metrics against scikit-learn: for every case of tests/ref/metrics_report.txt
 * (made by metrics_ref.py with sklearn 1.2) the confusion matrix, accuracy,
 * per-class and averaged precision / recall / F1 must equal sklearn's float64
 * values exactly, and nb_confusion_report() must print the same bytes as
 * classification_report(). Cases cover a class never predicted, a class
 * with no samples, a class with neither ("micro avg" row), long and UTF-8
 * names, digits 2 / 4 / 6, and 10, 20 and 150 classes (numpy's pairwise
 * summation in all its branches). Plus the confusion table and bad input. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

typedef struct {
  char name[64];
  int classes, digits;
  char **names; /* NULL for the default names */
  int64_t n, *truth, *pred, *confusion, *support;
  double accuracy, *precision, *recall, *f1, macro[3], weighted[3];
  char *report;
} ref_case;

static char *next_line(FILE *f, char **buf, size_t *cap) {
  ssize_t len = getline(buf, cap, f);
  if (len < 0) return NULL;
  if (len > 0 && (*buf)[len - 1] == '\n') (*buf)[len - 1] = '\0';
  return *buf;
}

/* The text after "key " on the next line; fails the test on a mismatch. */
static char *field(FILE *f, char **buf, size_t *cap, const char *key) {
  char *line = next_line(f, buf, cap);
  size_t k = strlen(key);
  if (!line || strncmp(line, key, k) || (line[k] != ' ' && line[k] != '\0'))
    fail_msg("metrics_report.txt: expected '%s', got '%s'", key, line ? line : "EOF");
  return line[k] ? line + k + 1 : line + k;
}

static int64_t *ints(const char *s, int64_t n) {
  int64_t *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
  char *end;
  for (int64_t i = 0; i < n; i++) {
    v[i] = strtoll(s, &end, 10);
    if (end == s) fail_msg("metrics_report.txt: too few integers");
    s = end;
  }
  return v;
}

static double *reals(const char *s, int n) {
  double *v = malloc((size_t)n * sizeof *v);
  char *end;
  for (int i = 0; i < n; i++) {
    v[i] = strtod(s, &end); /* Python's repr round-trips exactly through strtod */
    if (end == s) fail_msg("metrics_report.txt: too few numbers");
    s = end;
  }
  return v;
}

/* Reads the next case, or returns 0 at the end of the file. */
static int read_case(FILE *f, ref_case *c) {
  char *buf = NULL;
  size_t cap = 0;
  char *line;
  memset(c, 0, sizeof *c);
  while ((line = next_line(f, &buf, &cap)) && (line[0] == '#' || line[0] == '\0')) {
  }
  if (!line) {
    free(buf);
    return 0;
  }
  if (strncmp(line, "case ", 5)) fail_msg("metrics_report.txt: expected a case, got '%s'", line);
  snprintf(c->name, sizeof c->name, "%s", line + 5);
  c->classes = atoi(field(f, &buf, &cap, "classes"));
  c->digits = atoi(field(f, &buf, &cap, "digits"));
  char *names = field(f, &buf, &cap, "names");
  if (strcmp(names, "-")) {
    c->names = calloc((size_t)c->classes, sizeof *c->names);
    char *save = NULL, *tok = strtok_r(names, " ", &save);
    for (int k = 0; k < c->classes; k++, tok = strtok_r(NULL, " ", &save)) {
      if (!tok) fail_msg("%s: too few names", c->name);
      c->names[k] = strdup(tok);
    }
  }
  c->n = atoll(field(f, &buf, &cap, "n"));
  c->truth = ints(field(f, &buf, &cap, "true"), c->n);
  c->pred = ints(field(f, &buf, &cap, "pred"), c->n);
  c->confusion = ints(field(f, &buf, &cap, "confusion"), (int64_t)c->classes * c->classes);
  c->accuracy = strtod(field(f, &buf, &cap, "accuracy"), NULL);
  c->precision = reals(field(f, &buf, &cap, "precision"), c->classes);
  c->recall = reals(field(f, &buf, &cap, "recall"), c->classes);
  c->f1 = reals(field(f, &buf, &cap, "f1"), c->classes);
  c->support = ints(field(f, &buf, &cap, "support"), c->classes);
  double *m = reals(field(f, &buf, &cap, "macro"), 3),
         *w = reals(field(f, &buf, &cap, "weighted"), 3);
  memcpy(c->macro, m, sizeof c->macro);
  memcpy(c->weighted, w, sizeof c->weighted);
  free(m);
  free(w);
  int lines = atoi(field(f, &buf, &cap, "report"));
  size_t len = 0, rcap = 1;
  c->report = calloc(1, rcap);
  for (int i = 0; i < lines; i++) {
    line = next_line(f, &buf, &cap);
    if (!line) fail_msg("%s: report truncated", c->name);
    size_t l = strlen(line);
    c->report = realloc(c->report, rcap = len + l + 2);
    memcpy(c->report + len, line, l);
    len += l;
    c->report[len++] = '\n';
    c->report[len] = '\0';
  }
  field(f, &buf, &cap, "end");
  free(buf);
  return 1;
}

static void free_case(ref_case *c) {
  if (c->names)
    for (int k = 0; k < c->classes; k++) free(c->names[k]);
  free(c->names);
  free(c->truth);
  free(c->pred);
  free(c->confusion);
  free(c->support);
  free(c->precision);
  free(c->recall);
  free(c->f1);
  free(c->report);
}

static void expect_eq(const char *cs, const char *what, int k, double got, double want) {
  if (got != want) fail_msg("%s: %s[%d] = %.17g, sklearn %.17g", cs, what, k, got, want);
}

/* First line where two texts differ, for a readable failure. */
static void expect_same_text(const char *cs, const char *got, const char *want) {
  if (!strcmp(got, want)) return;
  int line = 1;
  const char *g = got, *w = want;
  while (*g && *g == *w) {
    if (*g == '\n') line++;
    g++, w++;
  }
  fail_msg("%s: report differs from sklearn's at line %d\n--- nabla:\n%s--- sklearn:\n%s", cs, line,
           got, want);
}

static void check_case(const ref_case *c) {
  nb_confusion *m;
  TU_OK(nb_confusion_new(c->classes, &m));
  /* in uneven batches, as an evaluation loop would add them */
  for (int64_t i = 0; i < c->n; i += 37) {
    int64_t b = c->n - i < 37 ? c->n - i : 37;
    TU_OK(nb_confusion_add(m, c->pred + i, c->truth + i, b));
  }
  assert_int_equal(nb_confusion_classes(m), c->classes);
  assert_int_equal(nb_confusion_total(m), c->n);
  for (int r = 0; r < c->classes; r++)
    for (int k = 0; k < c->classes; k++)
      if (nb_confusion_count(m, r, k) != c->confusion[r * c->classes + k])
        fail_msg("%s: count[%d][%d] = %lld, sklearn %lld", c->name, r, k,
                 (long long)nb_confusion_count(m, r, k),
                 (long long)c->confusion[r * c->classes + k]);
  expect_eq(c->name, "accuracy", 0, nb_confusion_accuracy(m), c->accuracy);
  for (int k = 0; k < c->classes; k++) {
    nb_class_metrics s;
    TU_OK(nb_confusion_class(m, k, &s));
    expect_eq(c->name, "precision", k, s.precision, c->precision[k]);
    expect_eq(c->name, "recall", k, s.recall, c->recall[k]);
    expect_eq(c->name, "f1", k, s.f1, c->f1[k]);
    assert_int_equal(s.support, c->support[k]);
  }
  nb_class_metrics avg[2] = {nb_confusion_macro(m), nb_confusion_weighted(m)};
  const double *want[2] = {c->macro, c->weighted};
  const char *what[2] = {"macro", "weighted"};
  for (int i = 0; i < 2; i++) {
    expect_eq(c->name, what[i], 0, avg[i].precision, want[i][0]);
    expect_eq(c->name, what[i], 1, avg[i].recall, want[i][1]);
    expect_eq(c->name, what[i], 2, avg[i].f1, want[i][2]);
    assert_int_equal(avg[i].support, c->n);
  }
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  TU_OK(nb_confusion_report(m, f, (const char *const *)c->names, c->digits));
  fclose(f);
  expect_same_text(c->name, text, c->report);
  free(text);
  nb_confusion_free(m);
}

static void test_against_sklearn(void **state) {
  (void)state;
  FILE *f = fopen(NB_TEST_REF_DIR "/metrics_report.txt", "r");
  if (!f) fail_msg("cannot open %s", NB_TEST_REF_DIR "/metrics_report.txt");
  ref_case c;
  int n = 0;
  while (read_case(f, &c)) {
    check_case(&c);
    free_case(&c);
    n++;
  }
  fclose(f);
  assert_int_equal(n, 11);
}

static char *render_table(const nb_confusion *m, const char *const *names) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  TU_OK(nb_confusion_print(m, f, names));
  fclose(f);
  return text;
}

static void test_table(void **state) {
  (void)state;
  nb_confusion *m;
  TU_OK(nb_confusion_new(3, &m));
  int64_t label[8] = {0, 0, 1, 1, 1, 2, 2, 2}, pred[8] = {0, 1, 1, 1, 2, 2, 2, 0};
  for (int rep = 0; rep < 2; rep++) TU_OK(nb_confusion_add(m, pred, label, 8));
  int64_t one[2] = {2, 2};
  for (int rep = 0; rep < 5; rep++) TU_OK(nb_confusion_add(m, one, one, 2));
  char *t = render_table(m, NULL);
  assert_string_equal(t, "true\\pred   0   1   2\n"
                         "0           2   2   0\n"
                         "1           0   4   2\n"
                         "2           2   0  14\n");
  free(t);
  const char *names[3] = {"cat", "dog", "hamster"};
  t = render_table(m, names);
  assert_string_equal(t, "true\\pred      cat      dog  hamster\n"
                         "cat              2        2        0\n"
                         "dog              0        4        2\n"
                         "hamster          2        0       14\n");
  free(t);
  nb_confusion_reset(m);
  assert_int_equal(nb_confusion_total(m), 0);
  assert_int_equal(nb_confusion_count(m, 2, 2), 0);
  assert_true(nb_confusion_accuracy(m) == 0.0);
  nb_class_metrics w = nb_confusion_weighted(m);
  assert_true(w.precision == 0 && w.recall == 0 && w.f1 == 0 && w.support == 0);
  nb_confusion_free(m);
}

static void test_bad_input(void **state) {
  (void)state;
  nb_confusion *m = (nb_confusion *)&m;
  assert_int_equal(nb_confusion_new(0, &m), NB_ERR_INVALID_ARG);
  assert_null(m);
  assert_int_equal(nb_confusion_new(3, NULL), NB_ERR_INVALID_ARG);
  TU_OK(nb_confusion_new(3, &m));
  int64_t pred[3] = {0, 1, 2}, label[3] = {0, 3, 1};
  assert_int_equal(nb_confusion_add(m, pred, label, 3), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "index 1 has prediction 1 and label 3"));
  assert_int_equal(nb_confusion_total(m), 0); /* the good first pair was not added either */
  assert_int_equal(nb_confusion_count(m, 0, 0), 0);
  pred[0] = -1;
  label[1] = 1;
  assert_int_equal(nb_confusion_add(m, pred, label, 3), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_confusion_add(m, NULL, label, 3), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_confusion_add(m, pred, label, -1), NB_ERR_INVALID_ARG);
  TU_OK(nb_confusion_add(m, NULL, NULL, 0));
  assert_int_equal(nb_confusion_count(m, 5, 0), 0);
  nb_class_metrics s;
  assert_int_equal(nb_confusion_class(m, 3, &s), NB_ERR_INVALID_ARG);
  FILE *f = tmpfile();
  assert_int_equal(nb_confusion_report(m, f, NULL, 16), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_confusion_report(m, f, NULL, -1), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_confusion_report(m, NULL, NULL, 4), NB_ERR_INVALID_ARG);
  const char *names[3] = {"a", NULL, "c"};
  assert_int_equal(nb_confusion_report(m, f, names, 4), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "class 1"));
  assert_int_equal(nb_confusion_print(m, f, names), NB_ERR_INVALID_ARG);
  fclose(f);
  nb_confusion_free(m);
  nb_confusion_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_against_sklearn),
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
