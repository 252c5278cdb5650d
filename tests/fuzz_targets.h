/* One fuzz input through each untrusted-file reader: ONNX models (load,
 * check, build for the declared shapes, compile), serialized TensorProtos
 * (.pb) and .npy arrays. Shared by the deterministic mutation test
 * (tests/test_fuzz_readers.c, run by ctest) and the optional libFuzzer
 * entry points (tests/fuzz/libfuzzer_readers.c, built with NABLA_FUZZ=ON).
 * The other readers' targets are in fuzz_io.h, fuzz_data.h and fuzz_model.h.
 *
 * A reader may accept or reject an input; either way it must return a
 * status (rejections with a message that names the input), never crash,
 * and a parsed result must be self-consistent. ASan/UBSan catch the rest.
 * Header-only with static functions, like ops_check.h. */
#ifndef NB_FUZZ_TARGETS_H
#define NB_FUZZ_TARGETS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "nabla/onnx.h"

/* Builds only graphs this small: a mutated shape must not make one fuzz
 * input cost seconds. */
#define FZ_MAX_DIM   64
#define FZ_MAX_NUMEL (1 << 14)
#define FZ_MAX_IO    16

/* ONNX model bytes: load, check, and when that passes, build for the
 * declared input shapes (symbolic dims as 1; integer inputs given as values
 * of ones, so shape-like inputs fold) and compile. */
static const char *fz_onnx(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  s->inputs++;
  nb_onnx_model *m = NULL;
  nb_status st = nb_onnx_load_buffer(data, n, name, &m);
  if (st) return fz_check_error(st, name);
  s->parsed++;
  const char *bad = NULL;
  int nin = nb_onnx_input_count(m), nout = nb_onnx_output_count(m);
  if (nb_onnx_check(m) || nin > FZ_MAX_IO || nout > FZ_MAX_IO) {
    nb_onnx_free(m);
    return NULL;
  }
  nb_onnx_input in[FZ_MAX_IO];
  nb_onnx_tensor vals[FZ_MAX_IO];
  int64_t shapes[FZ_MAX_IO][NB_MAX_DIMS];
  int64_t *ones[FZ_MAX_IO] = {0};
  int ok = 1;
  for (int i = 0; i < nin && ok; i++) {
    const char *nm;
    int et, nd;
    const int64_t *dims;
    nb_onnx_input_info(m, i, &nm, &et, &nd, &dims);
    if (nd < 0) nd = 0;
    int64_t numel = 1;
    for (int d = 0; d < nd; d++) {
      shapes[i][d] = dims[d] < 0 ? 1 : dims[d];
      ok &= shapes[i][d] <= FZ_MAX_DIM;
      if (ok) numel *= shapes[i][d];
    }
    ok &= numel <= FZ_MAX_NUMEL;
    in[i] = (nb_onnx_input){nm, nd, shapes[i], NULL};
    int is_int = et != NB_ONNX_FLOAT && et != NB_ONNX_DOUBLE && et != NB_ONNX_FLOAT16 &&
                 et != NB_ONNX_BFLOAT16 && et != 0;
    if (ok && is_int) {
      ones[i] = malloc((size_t)(numel ? numel : 1) * sizeof(int64_t));
      if (!ones[i]) {
        ok = 0;
        break;
      }
      for (int64_t k = 0; k < numel; k++) ones[i][k] = 1;
      vals[i] =
          (nb_onnx_tensor){.name = nm, .elem_type = et, .ndim = nd, .numel = numel, .i64 = ones[i]};
      memcpy(vals[i].dims, shapes[i], sizeof shapes[i]);
      in[i].value = &vals[i];
    }
  }
  nb_graph *g = ok ? nb_graph_new() : NULL;
  nb_tensor *xs[FZ_MAX_IO], *ys[FZ_MAX_IO];
  if (g) {
    st = nb_onnx_build(m, g, nin, in, xs, ys);
    if (st) {
      bad = fz_check_error(st, NULL);
    } else {
      s->built++;
      nb_backend *be = fz_cpu();
      nb_state *state = NULL;
      nb_plan *plan = NULL;
      if (be && !nb_state_new(be, &state)) {
        st = nb_compile(g, be, state, NULL, &plan);
        if (!st)
          s->compiled++;
        else if (st == NB_ERR_INTERNAL)
          bad = "compile: NB_ERR_INTERNAL on an imported graph";
      }
      nb_plan_free(plan);
      nb_state_free(state);
    }
  }
  nb_graph_free(g);
  for (int i = 0; i < nin && i < FZ_MAX_IO; i++) free(ones[i]);
  nb_onnx_free(m);
  return bad;
}

/* A serialized TensorProto: decoded, and when it parses, its values are
 * exactly as many as its shape says (reading them all lets ASan check). */
static const char *fz_pb(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  s->inputs++;
  nb_onnx_tensor *t = NULL;
  nb_status st = nb_onnx_tensor_decode(data, n, name, &t);
  if (st) return fz_check_error(st, name);
  s->parsed++;
  const char *bad = NULL;
  if (t->ndim < 0 || t->ndim > NB_MAX_DIMS) bad = "parsed tensor has a bad rank";
  int64_t numel = 1;
  for (int d = 0; !bad && d < t->ndim; d++) numel *= t->dims[d];
  if (!bad && numel != t->numel) bad = "parsed tensor's numel disagrees with its dims";
  if (!bad && numel > 0 && !t->f32 == !t->i64) bad = "parsed tensor has not exactly one of f32/i64";
  double sum = 0;
  for (int64_t i = 0; !bad && i < numel; i++) sum += t->f32 ? (double)t->f32[i] : (double)t->i64[i];
  (void)sum;
  nb_onnx_tensor_free(t);
  return bad;
}

/* A .npy file: decoded, and when it parses, its data is read in full. */
static const char *fz_npy(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  s->inputs++;
  nb_npy a;
  nb_status st = nb_npy_decode(data, n, name, &a);
  if (st) {
    if (a.data) return "a failed decode left data allocated";
    return fz_check_error(st, name);
  }
  s->parsed++;
  const char *bad = NULL;
  int64_t numel = 1;
  for (int d = 0; d < a.ndim; d++) numel *= a.shape[d];
  if (numel != a.numel) bad = "parsed array's numel disagrees with its shape";
  size_t bytes = (size_t)a.numel * nb_dtype_size(a.dtype);
  /* the file holds at least one byte per element: nothing larger than
   * 8 bytes per file byte can have been allocated */
  if (!bad && (size_t)a.numel > n) bad = "parsed array has more elements than the file has bytes";
  unsigned acc = 0;
  for (size_t i = 0; !bad && i < bytes; i++) acc += ((const uint8_t *)a.data)[i];
  (void)acc;
  nb_npy_free(&a);
  return bad;
}

#endif
