/* nabla run: runs an ONNX model on inputs given as .npy files and writes
 * every graph output as DIR/<output name>.npy.
 *
 * The graph is built for the shapes of the given arrays (nabla's shapes are
 * static). Float inputs are fed at run time; integer and bool inputs are
 * given as values, since the importer reads shapes, axes and indices at
 * build time. With --batch B the float inputs are cut into batches of B
 * along --batch-dim (default 0) and one compiled plan runs them all (a
 * second one serves a smaller last batch). */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla/nabla.h"
#include "nabla/onnx.h"

#define MAX_IO 64

typedef struct {
  const char *name, *file;
  nb_npy arr;
  int elem_type; /* the model's type for this input */
  int is_float;
  float *f32;   /* float inputs as f32 */
  int64_t *i64; /* integer inputs as int64 */
} run_input;

typedef struct {
  int64_t rows; /* batch size the plan was built for (-1: whole inputs) */
  nb_graph *g;
  nb_state *st;
  nb_plan *plan;
  nb_tensor *in_nodes[MAX_IO], *out_nodes[MAX_IO];
  int all_values; /* every input was folded: rebuilt for each batch */
} run_plan;

static void usage(FILE *f) {
  fprintf(f, "usage: nabla run MODEL.onnx --input NAME=FILE.npy ... --output DIR\n"
             "                [--batch B [--batch-dim D]] [--threads T]\n"
             "       nabla run MODEL.onnx --info\n"
             "Builds MODEL for the shapes of the given arrays, runs it on the CPU and\n"
             "writes each graph output as DIR/<output name>.npy (characters other than\n"
             "letters, digits, '.', '_' and '-' become '_'). --batch B cuts the float\n"
             "inputs into batches of B along axis D (default 0) and runs one compiled\n"
             "plan on each; the outputs are joined along the same axis. --info lists\n"
             "the model's inputs and outputs and any unsupported ops.\n");
}

static int fail(void) {
  fprintf(stderr, "nabla run: %s\n", nb_last_error());
  return 1;
}

static int is_float_type(int et) {
  return et == NB_ONNX_FLOAT || et == NB_ONNX_DOUBLE || et == NB_ONNX_FLOAT16 ||
         et == NB_ONNX_BFLOAT16;
}

/* A declared shape: "[?, 3]" (? for symbolic dims), "(no shape)". */
static const char *dims_str(int ndim, const int64_t *dims, char *buf, size_t cap) {
  if (ndim < 0) return "(no shape)";
  size_t n = (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < ndim && n < cap; d++) {
    if (dims[d] < 0)
      n += (size_t)snprintf(buf + n, cap - n, "%s?", d ? ", " : "");
    else
      n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, d ? ", " : "", dims[d]);
  }
  if (n < cap) snprintf(buf + n, cap - n, "]");
  return buf;
}

static int info(const char *path, const nb_onnx_model *m) {
  printf("%s: ir_version %" PRId64 ", opset %" PRId64 ", %d nodes\n", path, nb_onnx_ir_version(m),
         nb_onnx_opset(m, ""), nb_onnx_node_count(m));
  printf("inputs:\n");
  for (int i = 0; i < nb_onnx_input_count(m); i++) {
    const char *name;
    int et, nd;
    const int64_t *dims;
    nb_onnx_input_info(m, i, &name, &et, &nd, &dims);
    char s[160];
    printf("  %-24s %-8s %s\n", name, et ? nb_onnx_type_name(et) : "non-tensor",
           dims_str(nd, dims, s, sizeof s));
  }
  printf("outputs:\n");
  for (int j = 0; j < nb_onnx_output_count(m); j++) {
    const char *name;
    int et;
    nb_onnx_output_info(m, j, &name, &et);
    printf("  %-24s %s\n", name, et ? nb_onnx_type_name(et) : "non-tensor");
  }
  if (nb_onnx_check(m))
    printf("not runnable: %s\n", nb_last_error());
  else
    printf("every op has an importer\n");
  return 0;
}

/* Output file name: unsafe characters become '_'; names that would be
 * empty, hidden or taken get the output's index. */
static void file_name(const char *name, int j, char names[][256], char *out, size_t cap) {
  size_t n = 0;
  for (const char *p = name; *p && n + 1 < cap && n < 200; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '_' || c == '-';
    out[n++] = ok ? c : '_';
  }
  out[n] = '\0';
  int taken = !n || out[0] == '.';
  for (int k = 0; k < j && !taken; k++) taken = !strcmp(names[k], out);
  if (taken) snprintf(out + n, cap - n, "%soutput_%d", n ? "_" : "", j);
}

/* The index of model input `name`, or an error listing the inputs. */
static nb_status find_input(const nb_onnx_model *m, const char *name, int *index) {
  int n = nb_onnx_input_count(m);
  for (int i = 0; i < n; i++) {
    const char *in;
    nb_onnx_input_info(m, i, &in, NULL, NULL, NULL);
    if (!strcmp(in, name)) {
      if (index) *index = i;
      return NB_OK;
    }
  }
  char names[512] = "";
  size_t len = 0;
  for (int i = 0; i < n && len < sizeof names; i++) {
    const char *in;
    nb_onnx_input_info(m, i, &in, NULL, NULL, NULL);
    len += (size_t)snprintf(names + len, sizeof names - len, "%s'%s'", i ? ", " : "", in);
  }
  return nb_error(NB_ERR_INVALID_ARG, "the model has no input '%s' (its inputs: %s)", name,
                  n ? names : "none");
}

/* Checks an array against the model's declared input and converts it. */
static nb_status prepare_input(const nb_onnx_model *m, run_input *in) {
  int k = 0;
  nb_status st = find_input(m, in->name, &k);
  if (st) return st;
  int nd;
  const int64_t *dims;
  nb_onnx_input_info(m, k, NULL, &in->elem_type, &nd, &dims);
  const nb_npy *a = &in->arr;
  char s[160];
  in->is_float = is_float_type(in->elem_type);
  int arr_float = nb_dtype_is_float(a->dtype);
  if (in->is_float != arr_float)
    return nb_error(NB_ERR_DTYPE, "%s holds %s values, input '%s' is %s", in->file, a->descr,
                    in->name, nb_onnx_type_name(in->elem_type));
  if (nd >= 0) {
    int fits = nd == a->ndim;
    for (int d = 0; fits && d < nd; d++) fits = dims[d] < 0 || dims[d] == a->shape[d];
    if (!fits) {
      char want[160];
      return nb_error(NB_ERR_SHAPE, "%s: shape %s does not fit input '%s' %s", in->file,
                      nb_shape_str(a->ndim, a->shape, s, sizeof s), in->name,
                      dims_str(nd, dims, want, sizeof want));
    }
  }
  if (a->numel == 0)
    return nb_error(NB_ERR_SHAPE, "%s: shape %s is empty (nabla has no zero-size tensors)",
                    in->file, nb_shape_str(a->ndim, a->shape, s, sizeof s));
  size_t numel = (size_t)a->numel;
  if (in->is_float) {
    in->f32 = malloc(numel * sizeof(float));
    if (!in->f32) return nb_error(NB_ERR_OOM, "out of memory");
    return nb_convert(a->data, a->dtype, in->f32, NB_F32, numel);
  }
  in->i64 = malloc(numel * sizeof(int64_t));
  if (!in->i64) return nb_error(NB_ERR_OOM, "out of memory");
  return nb_convert(a->data, a->dtype, in->i64, NB_I64, numel);
}

/* Copies rows [r0, r0 + rows) along `axis` of a C-order array (elements of
 * `es` bytes) into dst. */
static void take_rows(const void *src, int ndim, const int64_t *shape, int axis, int64_t r0,
                      int64_t rows, size_t es, void *dst) {
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; d++) outer *= shape[d];
  for (int d = axis + 1; d < ndim; d++) inner *= shape[d];
  size_t chunk = (size_t)(rows * inner) * es, stride = (size_t)(shape[axis] * inner) * es;
  for (int64_t o = 0; o < outer; o++)
    memcpy((char *)dst + (size_t)o * chunk,
           (const char *)src + (size_t)o * stride + (size_t)(r0 * inner) * es, chunk);
}

/* The reverse: writes a batch's rows into the full array. */
static void put_rows(void *dst, int ndim, const int64_t *shape, int axis, int64_t r0, int64_t rows,
                     size_t es, const void *src) {
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; d++) outer *= shape[d];
  for (int d = axis + 1; d < ndim; d++) inner *= shape[d];
  size_t chunk = (size_t)(rows * inner) * es, stride = (size_t)(shape[axis] * inner) * es;
  for (int64_t o = 0; o < outer; o++)
    memcpy((char *)dst + (size_t)o * stride + (size_t)(r0 * inner) * es,
           (const char *)src + (size_t)o * chunk, chunk);
}

static void plan_free(run_plan *p) {
  nb_plan_free(p->plan);
  nb_state_free(p->st);
  nb_graph_free(p->g);
  memset(p, 0, sizeof *p);
}

/* Builds and compiles the model for batch [r0, r0 + rows) of the inputs
 * (rows < 0: whole inputs). Value inputs point into `scratch`. */
static nb_status build(const nb_onnx_model *m, nb_backend *be, run_input *ins, int nin, int axis,
                       int64_t r0, int64_t rows, run_plan *p) {
  nb_onnx_input spec[MAX_IO];
  nb_onnx_tensor vals[MAX_IO];
  int64_t shapes[MAX_IO][NB_MAX_DIMS];
  int64_t *cut[MAX_IO] = {0};
  nb_status st = NB_OK;
  memset(vals, 0, sizeof vals);
  for (int k = 0; k < nin; k++) {
    const nb_npy *a = &ins[k].arr;
    for (int d = 0; d < a->ndim; d++) shapes[k][d] = a->shape[d];
    if (rows >= 0 && ins[k].is_float) shapes[k][axis] = rows;
  }
  for (int attempt = 0; attempt < 2; attempt++) {
    plan_free(p);
    p->all_values = attempt;
    for (int k = 0; k < nin; k++) {
      const nb_npy *a = &ins[k].arr;
      spec[k] = (nb_onnx_input){ins[k].name, a->ndim, shapes[k], NULL};
      if (ins[k].is_float && !attempt) continue;
      nb_onnx_tensor *v = &vals[k];
      v->name = ins[k].name;
      v->elem_type = ins[k].is_float ? NB_ONNX_FLOAT : ins[k].elem_type;
      v->ndim = a->ndim;
      v->numel = 1;
      for (int d = 0; d < a->ndim; d++) v->numel *= (v->dims[d] = shapes[k][d]);
      if (ins[k].is_float && rows >= 0) {
        free(cut[k]);
        cut[k] = malloc((size_t)v->numel * sizeof(float));
        if (!cut[k]) {
          st = nb_error(NB_ERR_OOM, "out of memory");
          goto done;
        }
        take_rows(ins[k].f32, a->ndim, a->shape, axis, r0, rows, sizeof(float), cut[k]);
        v->f32 = (float *)cut[k];
      } else {
        v->f32 = ins[k].f32;
      }
      v->i64 = ins[k].i64;
      spec[k].value = v;
    }
    p->g = nb_graph_new();
    if (!p->g) {
      st = nb_error(NB_ERR_OOM, "out of memory");
      goto done;
    }
    st = nb_onnx_build(m, p->g, nin, spec, p->in_nodes, p->out_nodes);
    /* an op needed a float input at build time (Pad's value, Resize's
     * scales): fold every input and evaluate the model while building */
    if (!st || !strstr(nb_last_error(), "build time")) break;
  }
  if (!st) st = nb_state_new(be, &p->st);
  if (!st) st = nb_compile(p->g, be, p->st, NULL, &p->plan);
  p->rows = rows;
done:
  for (int k = 0; k < nin; k++) free(cut[k]);
  return st;
}

/* Feeds batch [r0, r0 + rows) of the float inputs and runs the plan. */
static nb_status run_batch(run_plan *p, run_input *ins, int nin, int axis, int64_t r0,
                           int64_t rows) {
  nb_status st = NB_OK;
  for (int k = 0; k < nin && !st; k++) {
    if (!p->in_nodes[k]) continue;
    const nb_npy *a = &ins[k].arr;
    size_t n = (size_t)nb_tensor_numel(p->in_nodes[k]);
    if (rows < 0) {
      st = nb_plan_set_input(p->plan, p->in_nodes[k], ins[k].f32, n * sizeof(float));
      continue;
    }
    float *buf = malloc(n * sizeof(float));
    if (!buf) return nb_error(NB_ERR_OOM, "out of memory");
    take_rows(ins[k].f32, a->ndim, a->shape, axis, r0, rows, sizeof(float), buf);
    st = nb_plan_set_input(p->plan, p->in_nodes[k], buf, n * sizeof(float));
    free(buf);
  }
  return st ? st : nb_plan_run(p->plan);
}

/* The nabla dtype an output of ONNX type `et` is written as. */
static nb_dtype out_dtype(int et) {
  switch (et) {
  case NB_ONNX_FLOAT16: return NB_F16;
  case NB_ONNX_UINT8:
  case NB_ONNX_BOOL: return NB_U8;
  case NB_ONNX_INT8:
  case NB_ONNX_INT16:
  case NB_ONNX_UINT16:
  case NB_ONNX_INT32: return NB_I32;
  case NB_ONNX_INT64:
  case NB_ONNX_UINT32:
  case NB_ONNX_UINT64: return NB_I64;
  default: return NB_F32;
  }
}

static nb_status write_output(const char *path, int et, int ndim, const int64_t *shape,
                              const float *v) {
  nb_dtype dt = out_dtype(et);
  size_t n = (size_t)nb_shape_numel(ndim, shape);
  if (dt == NB_F32) return nb_npy_save(path, NB_F32, ndim, shape, v);
  void *buf = malloc((n ? n : 1) * nb_dtype_size(dt));
  if (!buf) return nb_error(NB_ERR_OOM, "out of memory");
  nb_status st = NB_OK;
  if (dt == NB_F16) {
    for (size_t i = 0; i < n; i++) ((uint16_t *)buf)[i] = nb_f32_to_f16(v[i]);
  } else {
    /* integer and bool outputs are exact integers held in f32 */
    for (size_t i = 0; i < n; i++) {
      float r = rintf(v[i]);
      if (dt == NB_U8) ((uint8_t *)buf)[i] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
      if (dt == NB_I32) ((int32_t *)buf)[i] = (int32_t)r;
      if (dt == NB_I64) ((int64_t *)buf)[i] = (int64_t)r;
    }
  }
  st = nb_npy_save(path, dt, ndim, shape, buf);
  free(buf);
  return st;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int nabla_cmd_run(int argc, char **argv) {
  const char *model = NULL, *outdir = NULL;
  int want_info = 0, threads = 0, axis = 0, nin = 0;
  int64_t batch = 0;
  run_input ins[MAX_IO];
  memset(ins, 0, sizeof ins);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--info")) {
      want_info = 1;
      continue;
    }
    if (a[0] != '-') {
      if (model) {
        fprintf(stderr, "nabla run: unexpected argument '%s' (see --help)\n", a);
        return 2;
      }
      model = a;
      continue;
    }
    static const char *const with_value[] = {"--input", "--output", "--batch", "--batch-dim",
                                             "--threads"};
    int known = 0;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
      known |= !strcmp(a, with_value[k]);
    if (!known) {
      fprintf(stderr, "nabla run: unknown option %s (see --help)\n", a);
      return 2;
    }
    const char *v = i + 1 < argc ? argv[++i] : NULL;
    if (!v) {
      fprintf(stderr, "nabla run: %s needs a value (see --help)\n", a);
      return 2;
    }
    char *end = NULL;
    if (!strcmp(a, "--input")) {
      const char *eq = strchr(v, '=');
      if (!eq || eq == v || !eq[1]) {
        fprintf(stderr, "nabla run: --input wants NAME=FILE.npy, got '%s'\n", v);
        return 2;
      }
      if (nin == MAX_IO) {
        fprintf(stderr, "nabla run: more than %d inputs\n", MAX_IO);
        return 2;
      }
      /* argv strings are ours to split */
      argv[i][eq - v] = '\0';
      ins[nin].name = v;
      ins[nin].file = eq + 1;
      for (int k = 0; k < nin; k++)
        if (!strcmp(ins[k].name, v)) {
          fprintf(stderr, "nabla run: input '%s' given twice\n", v);
          return 2;
        }
      nin++;
    } else if (!strcmp(a, "--output")) {
      outdir = v;
    } else if (!strcmp(a, "--batch")) {
      batch = strtoll(v, &end, 10);
    } else if (!strcmp(a, "--batch-dim")) {
      axis = (int)strtol(v, &end, 10);
    } else {
      threads = (int)strtol(v, &end, 10); /* --threads */
    }
    if (end && (*end || end == v)) {
      fprintf(stderr, "nabla run: %s expects a number, got '%s'\n", a, v);
      return 2;
    }
  }
  if (!model) {
    usage(stderr);
    return 2;
  }
  if (!want_info && !outdir) {
    fprintf(stderr, "nabla run: --output DIR is needed (where the outputs go), or --info\n");
    return 2;
  }
  if (batch < 0 || axis < 0 || axis >= NB_MAX_DIMS || threads < 0) {
    fprintf(stderr, "nabla run: --batch, --batch-dim and --threads must be >= 0\n");
    return 2;
  }
  nb_set_num_threads(threads);
  nb_onnx_model *m = NULL;
  size_t mlen = strlen(model);
  nb_status loaded = nb_onnx_load(model, &m);
  if (loaded && mlen > 4 && !strcmp(model + mlen - 4, ".cfg")) {
    fprintf(stderr,
            "nabla run: %s is a model file, not an ONNX model; write one with nabla export "
            "%s WEIGHTS -o OUT.onnx\n",
            model, model);
    return 1;
  }
  if (loaded) return fail();
  if (want_info) {
    int rc = info(model, m);
    nb_onnx_free(m);
    return rc;
  }
  int code = 1;
  nb_backend *be = NULL;
  run_plan plans[2];
  memset(plans, 0, sizeof plans);
  float *outs[MAX_IO] = {0};
  int nout = nb_onnx_output_count(m);
  int64_t total = -1; /* rows along the batch axis */
  nb_status st = nb_onnx_check(m);
  if (!st && nout > MAX_IO) st = nb_error(NB_ERR_UNSUPPORTED, "more than %d outputs", MAX_IO);
  /* every given name must be a model input, and every model input given */
  for (int k = 0; !st && k < nin; k++) st = find_input(m, ins[k].name, NULL);
  for (int i = 0; !st && i < nb_onnx_input_count(m); i++) {
    const char *name;
    nb_onnx_input_info(m, i, &name, NULL, NULL, NULL);
    int given = 0;
    for (int k = 0; k < nin; k++) given |= !strcmp(ins[k].name, name);
    if (!given)
      st = nb_error(NB_ERR_INVALID_ARG, "%s: input '%s' is not given (--input %s=FILE.npy)", model,
                    name, name);
  }
  for (int k = 0; !st && k < nin; k++)
    if (!(st = nb_npy_load(ins[k].file, &ins[k].arr))) st = prepare_input(m, &ins[k]);
  for (int k = 0; !st && batch && k < nin; k++) {
    if (!ins[k].is_float) continue;
    const nb_npy *a = &ins[k].arr;
    if (axis >= a->ndim)
      st = nb_error(NB_ERR_SHAPE, "%s: rank %d has no batch axis %d", ins[k].file, a->ndim, axis);
    else if (total >= 0 && a->shape[axis] != total)
      st = nb_error(NB_ERR_SHAPE, "%s: %" PRId64 " rows along axis %d, other inputs have %" PRId64,
                    ins[k].file, a->shape[axis], axis, total);
    else
      total = a->shape[axis];
  }
  if (total < 0 || batch >= total) batch = 0; /* one batch: the whole inputs */
  if (!st) st = nb_backend_new("cpu", &be);
  if (!st) st = nb_mkdirs(outdir);
  if (st) goto done;

  double t0 = now_ms(), compile_ms = 0;
  int64_t nbatches = batch ? (total + batch - 1) / batch : 1;
  for (int64_t bi = 0; bi < nbatches; bi++) {
    int64_t r0 = batch ? bi * batch : 0,
            rows = batch ? (total - r0 < batch ? total - r0 : batch) : -1;
    run_plan *p = &plans[batch && rows != batch];
    if (!p->plan || p->all_values) {
      double c0 = now_ms();
      if ((st = build(m, be, ins, nin, axis, r0, rows, p))) goto done;
      compile_ms += now_ms() - c0;
    }
    if ((st = run_batch(p, ins, nin, axis, r0, rows))) goto done;
    for (int j = 0; j < nout; j++) {
      nb_tensor *t = p->out_nodes[j];
      int nd = nb_tensor_ndim(t);
      const int64_t *sh = nb_tensor_shape(t);
      size_t n = (size_t)nb_tensor_numel(t);
      if (!batch) {
        outs[j] = malloc(n * sizeof(float));
        if (!outs[j]) {
          st = nb_error(NB_ERR_OOM, "out of memory");
          goto done;
        }
        if ((st = nb_plan_get(p->plan, t, outs[j], n * sizeof(float)))) goto done;
        continue;
      }
      /* a batched output must carry the batch along the same axis */
      if (axis >= nd || sh[axis] != rows) {
        const char *name;
        nb_onnx_output_info(m, j, &name, NULL);
        char s[160];
        st = nb_error(NB_ERR_SHAPE,
                      "output '%s' has shape %s for a batch of %" PRId64
                      ", not the batch along axis %d; run without --batch",
                      name, nb_shape_str(nd, sh, s, sizeof s), rows, axis);
        goto done;
      }
      if (!outs[j]) outs[j] = malloc(n / (size_t)rows * (size_t)total * sizeof(float));
      float *tmp = malloc(n * sizeof(float));
      if (!outs[j] || !tmp) {
        free(tmp);
        st = nb_error(NB_ERR_OOM, "out of memory");
        goto done;
      }
      st = nb_plan_get(p->plan, t, tmp, n * sizeof(float));
      int64_t full[NB_MAX_DIMS];
      for (int d = 0; d < nd; d++) full[d] = d == axis ? total : sh[d];
      if (!st) put_rows(outs[j], nd, full, axis, r0, rows, sizeof(float), tmp);
      free(tmp);
      if (st) goto done;
    }
  }
  double run_ms = now_ms() - t0 - compile_ms;

  char names[MAX_IO][256];
  for (int j = 0; j < nout; j++) {
    const char *name;
    int et;
    nb_onnx_output_info(m, j, &name, &et);
    nb_tensor *t = plans[0].out_nodes[j];
    int nd = nb_tensor_ndim(t);
    int64_t sh[NB_MAX_DIMS];
    for (int d = 0; d < nd; d++) sh[d] = batch && d == axis ? total : nb_tensor_shape(t)[d];
    file_name(name, j, names, names[j], sizeof names[j]);
    char path[4096], s[160];
    if (strlen(outdir) + strlen(names[j]) + 7 > sizeof path) {
      st = nb_error(NB_ERR_INVALID_ARG, "%s: output path too long", outdir);
      goto done;
    }
    size_t lo = strlen(outdir), ln = strlen(names[j]);
    memcpy(path, outdir, lo);
    path[lo] = '/';
    memcpy(path + lo + 1, names[j], ln);
    memcpy(path + lo + 1 + ln, ".npy", 5);
    if ((st = write_output(path, et, nd, sh, outs[j]))) goto done;
    printf("%s -> %s %s %s\n", name, path, nb_shape_str(nd, sh, s, sizeof s),
           nb_onnx_type_name(et ? et : NB_ONNX_FLOAT));
  }
  printf("%" PRId64 " batch%s, build %.1f ms, run %.1f ms\n", nbatches, nbatches > 1 ? "es" : "",
         compile_ms, run_ms);
  code = 0;
done:
  if (st) code = fail();
  for (int j = 0; j < MAX_IO; j++) free(outs[j]);
  plan_free(&plans[0]);
  plan_free(&plans[1]);
  for (int k = 0; k < nin; k++) {
    nb_npy_free(&ins[k].arr);
    free(ins[k].f32);
    free(ins[k].i64);
  }
  nb_backend_free(be);
  nb_onnx_free(m);
  return code;
}
