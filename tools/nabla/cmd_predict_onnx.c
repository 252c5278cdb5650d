/* nabla predict MODEL.onnx IMAGE...: classifies images with an ONNX image
 * classifier (one input [N, C, H, W], first output [N, classes]).
 *
 * The model is built and compiled once for a batch of B images, and that
 * one plan runs every batch; a last, smaller batch is padded with zero
 * images whose rows are ignored (inference rows are independent). The
 * output is read as probabilities when every row already is a
 * distribution (non-negative, summing to 1), else softmax is applied. */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/nabla.h"
#include "nabla/onnx.h"

static void usage(FILE *f) {
  fprintf(f, "usage: nabla predict MODEL.onnx IMAGE... [--top-k K] [--batch B] [--threads T]\n"
             "                     [--mean M[,M,M]] [--std S[,S,S]]\n"
             "Classifies PNG/JPEG images with an ONNX model whose input is [N, C, H, W]\n"
             "(C = 1 or 3, H and W fixed): pixels in [0, 1], then (x - mean) / std per\n"
             "channel. Prints the top-k classes with their probabilities (softmax of\n"
             "the first output unless its rows already sum to 1). One compiled plan\n"
             "runs every batch of B images (default 32).\n");
}

static int fail(void) {
  fprintf(stderr, "nabla predict: %s\n", nb_last_error());
  return 1;
}

/* "a" or "a,b,c" into three per-channel values. */
static int parse_triple(const char *s, float *v) {
  char *end;
  for (int c = 0; c < 3; c++) {
    v[c] = strtof(s, &end);
    if (end == s || !isfinite(v[c])) return 0;
    if (!*end) {
      for (int k = c + 1; k < 3; k++) v[k] = v[c];
      return c == 0 || c == 2;
    }
    if (*end != ',') return 0;
    s = end + 1;
  }
  return 0;
}

int nabla_cmd_predict_onnx(int argc, char **argv) {
  const char *model = NULL;
  const char **files = calloc((size_t)argc + 1, sizeof *files);
  int nfiles = 0, top_k = 3, threads = 0;
  int64_t batch = 32;
  float mean[3] = {0, 0, 0}, stdv[3] = {1, 1, 1};
  if (!files) return 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      free(files);
      return 0;
    }
    if (a[0] != '-' || a[1] != '-') {
      if (!model)
        model = a;
      else
        files[nfiles++] = a;
      continue;
    }
    /* an unknown last option is named as unknown, not as one lacking a value */
    if (strcmp(a, "--top-k") && strcmp(a, "--batch") && strcmp(a, "--threads") &&
        strcmp(a, "--mean") && strcmp(a, "--std")) {
      fprintf(stderr, "nabla predict: unknown option %s (see --help)\n", a);
      free(files);
      return 2;
    }
    const char *v = i + 1 < argc ? argv[++i] : NULL;
    if (!v) {
      fprintf(stderr, "nabla predict: %s needs a value (see --help)\n", a);
      free(files);
      return 2;
    }
    char *end = NULL;
    int ok = 1;
    if (!strcmp(a, "--top-k"))
      top_k = (int)strtol(v, &end, 10);
    else if (!strcmp(a, "--batch"))
      batch = strtoll(v, &end, 10);
    else if (!strcmp(a, "--threads"))
      threads = (int)strtol(v, &end, 10);
    else if (!strcmp(a, "--mean"))
      ok = parse_triple(v, mean);
    else if (!strcmp(a, "--std"))
      ok = parse_triple(v, stdv);
    else {
      fprintf(stderr, "nabla predict: unknown option %s (see --help)\n", a);
      free(files);
      return 2;
    }
    if (!ok || (end && *end)) {
      fprintf(stderr, "nabla predict: %s expects %s\n", a,
              !strcmp(a, "--mean") || !strcmp(a, "--std") ? "one or three numbers (a,b,c)"
                                                          : "a number");
      free(files);
      return 2;
    }
  }
  if (!model || !nfiles) {
    usage(stderr);
    free(files);
    return 2;
  }
  if (top_k < 1 || batch < 1 || threads < 0 || !(stdv[0] != 0 && stdv[1] != 0 && stdv[2] != 0)) {
    fprintf(stderr, "nabla predict: --top-k and --batch must be >= 1 and --std non-zero\n");
    free(files);
    return 2;
  }
  nb_set_num_threads(threads);
  if (batch > nfiles) batch = nfiles;

  nb_onnx_model *m = NULL;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_graph *g = NULL;
  nb_plan *plan = NULL;
  nb_tensor *x = NULL, **outs = NULL;
  float *xb = NULL, *yb = NULL;
  const char *iname = NULL;
  int et = 0, nd = 0;
  const int64_t *dims = NULL;
  int64_t classes = 0, per = 0;
  nb_status rc = nb_onnx_load(model, &m);
  if (!rc) rc = nb_onnx_check(m);
  if (!rc && nb_onnx_input_count(m) != 1)
    rc = nb_error(NB_ERR_UNSUPPORTED, "%s: predict takes models with one input, this one has %d",
                  model, nb_onnx_input_count(m));
  if (!rc) rc = nb_onnx_input_info(m, 0, &iname, &et, &nd, &dims);
  if (!rc && (et != NB_ONNX_FLOAT || nd != 4 || (dims[1] != 1 && dims[1] != 3) || dims[2] <= 0 ||
              dims[3] <= 0))
    rc = nb_error(NB_ERR_UNSUPPORTED,
                  "%s: input '%s' must be float [N, C, H, W] with C = 1 or 3 and H, W fixed "
                  "(use nabla run for other models)",
                  model, iname);
  if (!rc && dims[0] > 0 && dims[0] != batch) batch = dims[0]; /* a fixed batch size: pad to it */
  int64_t shape[4] = {batch, dims ? dims[1] : 0, dims ? dims[2] : 0, dims ? dims[3] : 0};
  /* The model file sets H and W and may fix N: sizes its batch buffer
   * (N x C x H x W floats) and the image loader's ints must hold without
   * wrapping, or the buffers would be sized by an overflowed product. */
  if (!rc) {
    int64_t numel = nb_shape_numel(4, shape);
    if (batch > INT_MAX || shape[2] > INT_MAX || shape[3] > INT_MAX || numel < 0 ||
        (uint64_t)numel >= SIZE_MAX / sizeof(float)) {
      char s[128];
      rc = nb_error(NB_ERR_UNSUPPORTED,
                    "%s: input '%s' of %s is too large for predict (N x C x H x W floats must "
                    "fit in memory, and N, H and W below 2^31)",
                    model, iname, nb_shape_str(4, shape, s, sizeof s));
    }
  }
  nb_onnx_input spec = {iname, 4, shape, NULL};
  if (!rc) rc = nb_backend_new("cpu", &be);
  if (!rc && !(g = nb_graph_new())) rc = nb_error(NB_ERR_OOM, "out of memory");
  if (!rc && !(outs = calloc((size_t)nb_onnx_output_count(m) + 1, sizeof *outs)))
    rc = nb_error(NB_ERR_OOM, "out of memory");
  if (!rc) rc = nb_onnx_build(m, g, 1, &spec, &x, outs);
  if (!rc && !outs[0]) rc = nb_error(NB_ERR_UNSUPPORTED, "%s: the model has no output", model);
  if (!rc) {
    /* [B, classes] or [B, classes, 1, 1, ...] */
    const int64_t *os = nb_tensor_shape(outs[0]);
    classes = nb_tensor_numel(outs[0]) / batch;
    if (nb_tensor_ndim(outs[0]) < 2 || os[0] != batch || classes != os[1])
      rc = nb_error(NB_ERR_UNSUPPORTED, "%s: the first output is not [N, classes]", model);
  }
  if (!rc) rc = nb_state_new(be, &st);
  if (!rc) rc = nb_compile(g, be, st, NULL, &plan);
  if (!rc) { /* the products were checked above; classes * batch is the output's size */
    per = shape[1] * shape[2] * shape[3];
    xb = malloc((size_t)(batch * per + 1) * sizeof *xb);
    yb = malloc((size_t)(batch * classes + 1) * sizeof *yb);
    if (!xb || !yb) rc = nb_error(NB_ERR_OOM, "out of memory");
  }
  nb_image_options io = {(int)shape[1], (int)shape[2], (int)shape[3], NB_RESIZE_BILINEAR};
  for (int f0 = 0; !rc && f0 < nfiles; f0 += (int)batch) {
    int n = nfiles - f0 < batch ? nfiles - f0 : (int)batch;
    memset(xb, 0, (size_t)(batch * per) * sizeof *xb);
    for (int i = 0; !rc && i < n; i++) {
      float *img = xb + (size_t)i * (size_t)per;
      rc = nb_image_load(files[f0 + i], &io, img);
      int64_t hw = shape[2] * shape[3];
      for (int64_t c = 0; !rc && c < shape[1]; c++)
        for (int64_t k = 0; k < hw; k++) img[c * hw + k] = (img[c * hw + k] - mean[c]) / stdv[c];
    }
    if (!rc) rc = nb_plan_set_input(plan, x, xb, (size_t)(batch * per) * sizeof *xb);
    if (!rc) rc = nb_plan_run(plan);
    if (!rc) rc = nb_plan_get(plan, outs[0], yb, (size_t)(batch * classes) * sizeof *yb);
    for (int i = 0; !rc && i < n; i++) {
      float *p = yb + (size_t)i * (size_t)classes;
      double sum = 0, mx = -INFINITY;
      int dist = 1;
      for (int64_t j = 0; j < classes; j++) {
        sum += p[j];
        dist &= p[j] >= 0.0f && p[j] <= 1.0f;
        if (p[j] > mx) mx = p[j];
      }
      /* NaN has no rank (and an infinite logit makes softmax NaN) */
      if (!isfinite(sum)) {
        rc = nb_error(NB_ERR_INVALID_ARG, "%s: %s: the model's output row holds NaN or inf", model,
                      files[f0 + i]);
        break;
      }
      if (!dist || fabs(sum - 1.0) > 1e-3) { /* logits: softmax in double */
        double z = 0;
        for (int64_t j = 0; j < classes; j++) z += exp((double)p[j] - mx);
        for (int64_t j = 0; j < classes; j++) p[j] = (float)(exp((double)p[j] - mx) / z);
      }
      printf("%s:", files[f0 + i]);
      for (int k = 0; k < top_k && k < classes; k++) {
        int64_t best = -1;
        for (int64_t j = 0; j < classes; j++)
          if (p[j] >= 0 && (best < 0 || p[j] > p[best])) best = j;
        printf("  %lld (%.4f)", (long long)best, (double)p[best]);
        p[best] = -1.0f;
      }
      printf("\n");
    }
  }
  int code = rc ? fail() : 0;
  free(xb);
  free(yb);
  free(outs);
  nb_plan_free(plan);
  nb_state_free(st);
  nb_graph_free(g);
  nb_backend_free(be);
  nb_onnx_free(m);
  free(files);
  return code;
}
