/* nabla onnx-test: runs ONNX backend test cases (a folder with model.onnx
 * and test_data_set_N/{input,output}_K.pb) through the importer on the CPU
 * and compares the outputs like onnx/backend/test: |got - want| <= atol +
 * rtol * |want| with rtol 1e-3, atol 1e-7 (the TestCase defaults). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nabla/nabla.h"
#include "nabla/onnx.h"

#define RTOL   1e-3
#define ATOL   1e-7
#define MAX_IO 32

enum { CASE_PASS, CASE_FAIL, CASE_SKIP };

static int is_file(const char *p) {
  struct stat s;
  return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

static int is_dir(const char *p) {
  struct stat s;
  return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

/* Loads dir/prefix_K.pb for K = 0..n-1. */
static nb_status load_pbs(const char *dir, const char *prefix, int n, nb_onnx_tensor **out) {
  char path[4096];
  for (int k = 0; k < n; k++) out[k] = NULL;
  for (int k = 0; k < n; k++) {
    if (snprintf(path, sizeof path, "%s/%s_%d.pb", dir, prefix, k) >= (int)sizeof path)
      return nb_error(NB_ERR_INVALID_ARG, "%s: path too long", dir);
    nb_status st = nb_onnx_tensor_load(path, &out[k]);
    if (st) return st;
  }
  return NB_OK;
}

static void free_pbs(nb_onnx_tensor **t, int n) {
  for (int k = 0; k < n; k++) nb_onnx_tensor_free(t[k]);
}

static int64_t value_at(const nb_onnx_tensor *t, int64_t i) {
  return t->i64 ? t->i64[i] : (int64_t)t->f32[i];
}

/* Builds, runs and compares one data set. Returns CASE_*; why gets the
 * reason for a failure or skip. */
static int run_set(const nb_onnx_model *m, nb_backend *be, const char *set, char *why, size_t cap) {
  int nin = nb_onnx_input_count(m), nout = nb_onnx_output_count(m);
  if (nin > MAX_IO || nout > MAX_IO) {
    snprintf(why, cap, "more than %d inputs or outputs", MAX_IO);
    return CASE_SKIP;
  }
  nb_onnx_tensor *ins[MAX_IO], *outs[MAX_IO];
  nb_status st = load_pbs(set, "input", nin, ins);
  if (!st)
    st = load_pbs(set, "output", nout, outs);
  else
    for (int k = 0; k < nout; k++) outs[k] = NULL;
  if (st) {
    snprintf(why, cap, "%s", nb_last_error());
    free_pbs(ins, nin);
    free_pbs(outs, nout);
    return st == NB_ERR_UNSUPPORTED ? CASE_SKIP : CASE_FAIL;
  }
  int result = CASE_FAIL;
  nb_graph *g = NULL;
  nb_state *state = NULL;
  nb_plan *plan = NULL;
  nb_tensor *in_nodes[MAX_IO], *out_nodes[MAX_IO];
  nb_onnx_input spec[MAX_IO];
  /* float inputs are fed at run time; integer and bool inputs (shapes, axes,
   * indices) are folded. If an op needs a float input at build time (pads, a
   * constant value), the second try folds every input. */
  for (int attempt = 0; attempt < 2; attempt++) {
    for (int k = 0; k < nin; k++) {
      const char *name;
      nb_onnx_input_info(m, k, &name, NULL, NULL, NULL);
      int fl = ins[k]->f32 != NULL;
      spec[k] = (nb_onnx_input){name, ins[k]->ndim, ins[k]->dims, fl && !attempt ? NULL : ins[k]};
    }
    nb_graph_free(g);
    g = nb_graph_new();
    if (!g) {
      snprintf(why, cap, "out of memory");
      goto done;
    }
    st = nb_onnx_build(m, g, nin, spec, in_nodes, out_nodes);
    if (!st || !strstr(nb_last_error(), "build time")) break;
  }
  if (st) {
    snprintf(why, cap, "%s", nb_last_error());
    if (st == NB_ERR_UNSUPPORTED) result = CASE_SKIP;
    goto done;
  }
  if ((st = nb_state_new(be, &state)) || (st = nb_compile(g, be, state, NULL, &plan))) {
    snprintf(why, cap, "compile: %s", nb_last_error());
    if (st == NB_ERR_UNSUPPORTED || st == NB_ERR_DTYPE) result = CASE_SKIP;
    goto done;
  }
  for (int k = 0; k < nin; k++) {
    if (!in_nodes[k]) continue;
    st = nb_plan_set_input(plan, in_nodes[k], ins[k]->f32, (size_t)ins[k]->numel * sizeof(float));
    if (st) {
      snprintf(why, cap, "set input %d: %s", k, nb_last_error());
      goto done;
    }
  }
  if ((st = nb_plan_run(plan))) {
    snprintf(why, cap, "run: %s", nb_last_error());
    goto done;
  }
  size_t len = 0;
  why[0] = '\0';
  int ok = 1;
  for (int j = 0; j < nout; j++) {
    nb_tensor *t = out_nodes[j];
    const nb_onnx_tensor *want = outs[j];
    int64_t n = nb_tensor_numel(t);
    int nd = nb_tensor_ndim(t);
    const int64_t *sh = nb_tensor_shape(t);
    int same = nd == want->ndim && n == want->numel;
    for (int d = 0; same && d < nd; d++) same = sh[d] == want->dims[d];
    if (!same) {
      char a[128], b[128];
      len += (size_t)snprintf(
          why + len, len < cap ? cap - len : 0, "output %d: shape %s, want %s; ", j,
          nb_shape_str(nd, sh, a, sizeof a), nb_shape_str(want->ndim, want->dims, b, sizeof b));
      ok = 0;
      continue;
    }
    float *got = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!got || nb_plan_get(plan, t, got, (size_t)n * sizeof(float))) {
      snprintf(why, cap, "output %d: %s", j, got ? nb_last_error() : "out of memory");
      free(got);
      ok = 0;
      break;
    }
    /* an f16/bf16 output is rounded to its type, as a runtime computing in
     * that type would */
    int et = 0;
    nb_onnx_output_info(m, j, NULL, &et);
    for (int64_t i = 0; i < n; i++) {
      if (et == NB_ONNX_FLOAT16) got[i] = nb_f16_to_f32(nb_f32_to_f16(got[i]));
      if (et == NB_ONNX_BFLOAT16) got[i] = nb_bf16_to_f32(nb_f32_to_bf16(got[i]));
    }
    int64_t bad = 0, first = -1;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
      double w = want->f32 ? (double)want->f32[i] : (double)value_at(want, i);
      double v = got[i];
      int match;
      if (isnan(w) || isnan(v))
        match = isnan(w) && isnan(v);
      else if (isinf(w) || isinf(v))
        match = w == v;
      else
        match = fabs(v - w) <= ATOL + RTOL * fabs(w);
      if (!match) {
        if (first < 0) first = i;
        bad++;
        if (fabs(v - w) > worst || isnan(v)) worst = fabs(v - w);
      }
    }
    if (bad) {
      double w = want->f32 ? (double)want->f32[first] : (double)value_at(want, first);
      len += (size_t)snprintf(why + len, len < cap ? cap - len : 0,
                              "output %d: %lld of %lld values differ (first at %lld: got %.9g, "
                              "want %.9g; max abs diff %.3g); ",
                              j, (long long)bad, (long long)n, (long long)first, (double)got[first],
                              w, worst);
      ok = 0;
    }
    free(got);
  }
  if (ok) result = CASE_PASS;
done:
  nb_plan_free(plan);
  nb_state_free(state);
  nb_graph_free(g);
  free_pbs(ins, nin);
  free_pbs(outs, nout);
  return result;
}

static int run_case(const char *dir, nb_backend *be, char *why, size_t cap) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/model.onnx", dir) >= (int)sizeof path) {
    snprintf(why, cap, "path too long");
    return CASE_FAIL;
  }
  nb_onnx_model *m;
  nb_status st = nb_onnx_load(path, &m);
  if (st) {
    snprintf(why, cap, "%s", nb_last_error());
    return st == NB_ERR_UNSUPPORTED ? CASE_SKIP : CASE_FAIL;
  }
  if ((st = nb_onnx_check(m))) {
    snprintf(why, cap, "%s", nb_last_error());
    nb_onnx_free(m);
    return CASE_SKIP;
  }
  /* sequences, maps and optionals are not tensors; nabla has only tensors */
  for (int i = 0; i < nb_onnx_input_count(m) + nb_onnx_output_count(m); i++) {
    int et;
    const char *name;
    if (i < nb_onnx_input_count(m))
      nb_onnx_input_info(m, i, &name, &et, NULL, NULL);
    else
      nb_onnx_output_info(m, i - nb_onnx_input_count(m), &name, &et);
    if (!et) {
      snprintf(why, cap, "'%s' is not a tensor (sequence, map or optional)", name);
      nb_onnx_free(m);
      return CASE_SKIP;
    }
  }
  int result = CASE_PASS, nsets = 0;
  for (int s = 0; result == CASE_PASS; s++) {
    if (snprintf(path, sizeof path, "%s/test_data_set_%d", dir, s) >= (int)sizeof path ||
        !is_dir(path))
      break;
    nsets++;
    result = run_set(m, be, path, why, cap);
  }
  if (!nsets) {
    snprintf(why, cap, "no test_data_set_0");
    result = CASE_FAIL;
  }
  nb_onnx_free(m);
  return result;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void usage(FILE *f) {
  fprintf(f, "usage: nabla onnx-test DIR... [--verbose] [--min-pass N]\n"
             "  DIR is an ONNX test case (model.onnx, test_data_set_*/) or a folder of them.\n"
             "  Prints failures (and skips and passes with --verbose), then\n"
             "  'N passed, M failed, K skipped'. Exits 1 when a case fails, or with\n"
             "  --min-pass when fewer than N cases pass.\n");
}

int nabla_cmd_onnx_test(int argc, char **argv) {
  int verbose = 0;
  long min_pass = -1;
  int ndirs = 0;
  char **dirs = calloc((size_t)argc + 1, sizeof(char *));
  if (!dirs) return 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
      verbose = 1;
    } else if (!strcmp(argv[i], "--min-pass")) {
      char *end = NULL;
      const char *v = i + 1 < argc ? argv[++i] : "";
      min_pass = strtol(v, &end, 10);
      if (!*v || *end || min_pass < 0) {
        fprintf(stderr, "nabla onnx-test: --min-pass expects a number >= 0, got '%s'\n", v);
        free(dirs);
        return 2;
      }
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      free(dirs);
      return 0;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "nabla onnx-test: unknown option %s (see --help)\n", argv[i]);
      free(dirs);
      return 2;
    } else {
      dirs[ndirs++] = argv[i];
    }
  }
  if (!ndirs) {
    usage(stderr);
    free(dirs);
    return 2;
  }
  nb_backend *be;
  if (nb_backend_new("cpu", &be)) {
    fprintf(stderr, "nabla onnx-test: %s\n", nb_last_error());
    free(dirs);
    return 1;
  }
  int counts[3] = {0, 0, 0};
  static char why[8192];
  char path[4096];
  for (int d = 0; d < ndirs; d++) {
    int plen = snprintf(path, sizeof path, "%s/model.onnx", dirs[d]);
    char **cases = NULL;
    int ncases = 0;
    if (plen < (int)sizeof path && is_file(path)) {
      cases = malloc(sizeof(char *));
      if (cases) cases[ncases++] = strdup(dirs[d]);
    } else {
      /* a folder of cases, run in name order so output is stable */
      DIR *dp = opendir(dirs[d]);
      if (!dp) {
        fprintf(stderr, "nabla onnx-test: %s: not a test case or a folder of them\n", dirs[d]);
        counts[CASE_FAIL]++;
        continue;
      }
      int cap = 0;
      struct dirent *e;
      while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        if (snprintf(path, sizeof path, "%s/%s/model.onnx", dirs[d], e->d_name) >=
                (int)sizeof path ||
            !is_file(path))
          continue;
        if (ncases == cap) {
          cap = cap ? 2 * cap : 64;
          char **nc = realloc(cases, (size_t)cap * sizeof(char *));
          if (!nc) break;
          cases = nc;
        }
        (void)!snprintf(path, sizeof path, "%s/%s", dirs[d], e->d_name); /* shorter than above */
        cases[ncases++] = strdup(path);
      }
      closedir(dp);
      if (ncases) qsort(cases, (size_t)ncases, sizeof(char *), cmp_str);
      if (!ncases) { /* a typo in the path must not pass as "0 failed" */
        fprintf(stderr, "nabla onnx-test: %s: not a test case or a folder of them\n", dirs[d]);
        counts[CASE_FAIL]++;
      }
    }
    for (int c = 0; c < ncases; c++) {
      if (!cases[c]) continue;
      why[0] = '\0';
      int r = run_case(cases[c], be, why, sizeof why);
      counts[r]++;
      const char *name = strrchr(cases[c], '/') ? strrchr(cases[c], '/') + 1 : cases[c];
      if (r == CASE_FAIL)
        printf("FAIL %s: %s\n", name, why);
      else if (verbose)
        printf("%s %s%s%s\n", r == CASE_PASS ? "PASS" : "SKIP", name, r == CASE_SKIP ? ": " : "",
               r == CASE_SKIP ? why : "");
      fflush(stdout);
      free(cases[c]);
    }
    free(cases);
  }
  nb_backend_free(be);
  free(dirs);
  printf("%d passed, %d failed, %d skipped\n", counts[CASE_PASS], counts[CASE_FAIL],
         counts[CASE_SKIP]);
  if (min_pass >= 0) {
    if (counts[CASE_PASS] < min_pass) {
      fprintf(stderr, "nabla onnx-test: %d passed, below the floor of %ld\n", counts[CASE_PASS],
              min_pass);
      return 1;
    }
    return 0;
  }
  return counts[CASE_FAIL] ? 1 : 0;
}
