/* Host-to-device transfers of the CUDA backend (cuda_transfer.cu): pinned
 * staging, a copy stream for large uploads, landing on the compute stream.
 *   - round trips of sizes around the small/large threshold (64 KiB) and
 *     the piece size (8 MiB), with the caller's buffer scribbled over right
 *     after nb_plan_set_input returns: the upload took its own copy;
 *   - ordering: the next input uploaded while a long run that reads the
 *     current one at its very end is still on the GPU; that run's result
 *     must be of the current input, the next run's of the next one;
 *   - statistics: each upload went in ceil(bytes / 8 MiB) pieces and
 *     those of >= 64 KiB crossed on the copy stream (nb_memory_stats);
 *   - the ring wrapping: 80 MiB (10 pieces for 8 buffers) uploaded behind
 *     a long run arrives whole;
 *   - figures (printed, not asserted): ms of a long run, of a 64 MiB
 *     upload, and of the two issued together, which overlap when the copy
 *     stream works.
 * Exits 77 (skipped) without a GPU or a CUDA build. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_check.h"

/* y = 2 x, after `depth` rounds of h = tanh(h W) on a [dim, dim] h: the
 * result reads x last, once the chain is done (dim 2048, depth 24: about
 * 0.4 TFLOP, several ms on an H100 in FP32). */
typedef struct chain {
  nb_graph *g;
  nb_plan *p;
  nb_tensor *x, *y;
} chain;

static nb_status chain_new(nb_backend *be, nb_state *st, int64_t n, int depth, chain *c) {
  memset(c, 0, sizeof *c);
  c->g = nb_graph_new();
  c->x = nb_input(c->g, "x", NB_F32, 1, &n);
  nb_tensor *h = NULL;
  if (depth > 0) {
    int64_t hs[2] = {2048, 2048}, ws[2] = {2048, 2048};
    nb_init u = {NB_INIT_UNIFORM, -0.03f, 0.03f, 7};
    h = nb_variable(c->g, "h0", NB_F32, 2, hs, u);
    nb_tensor *w = nb_variable(c->g, "w", NB_F32, 2, ws, u);
    for (int i = 0; i < depth; i++) h = nb_tanh(c->g, nb_matmul(c->g, h, w));
  }
  c->y = nb_mul(c->g, c->x, nb_scalar(c->g, 2.0f));
  /* + 0 * sum(h): finite (tanh), so y stays exactly 2x, but waits for h */
  if (h)
    c->y = nb_add(c->g, c->y, nb_mul(c->g, nb_sum(c->g, h, 0, NULL, 0), nb_scalar(c->g, 0.0f)));
  nb_tensor_set_output(c->y);
  return nb_compile(c->g, be, st, NULL, &c->p);
}

static void chain_free(chain *c) {
  nb_plan_free(c->p);
  nb_graph_free(c->g);
}

static void fill(float *x, int64_t n, int k) {
  for (int64_t i = 0; i < n; i++) x[i] = (float)((i * 7 + k * 131) % 1000) - 500.0f;
}

/* n floats through one plan; the caller's buffer is overwritten at once.
 * The upload goes in ceil(bytes / 8 MiB) pieces, those of >= 64 KiB on
 * the copy stream. */
static void check_round_trip(nb_backend *gpu, nb_state *st, int64_t n) {
  chain c;
  nb_status s = chain_new(gpu, st, n, 0, &c);
  float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
  if (!s && x && y) {
    fill(x, n, 1);
    nb_memory_stats m0, m1;
    s = nb_backend_memory_stats(gpu, &m0);
    if (!s) s = nb_plan_set_input(c.p, c.x, x, (size_t)n * sizeof *x);
    if (!s) s = nb_backend_memory_stats(gpu, &m1);
    size_t bytes = (size_t)n * sizeof *x, piece = (size_t)8 << 20, pieces = 0, async = 0;
    for (size_t at = 0; at < bytes; at += piece, pieces++) {
      size_t len = bytes - at < piece ? bytes - at : piece;
      async += len >= ((size_t)64 << 10);
    }
    if (!s) {
      EXPECT(m1.uploads - m0.uploads == pieces, "%lld floats: %llu pieces uploaded, want %zu",
             (long long)n, (unsigned long long)(m1.uploads - m0.uploads), pieces);
      EXPECT(m1.uploads_async - m0.uploads_async == async,
             "%lld floats: %llu pieces on the copy stream, want %zu", (long long)n,
             (unsigned long long)(m1.uploads_async - m0.uploads_async), async);
    }
    memset(x, 0xff, (size_t)n * sizeof *x); /* NaNs: the upload must hold its own copy */
    if (!s) s = nb_plan_run(c.p);
    if (!s) s = nb_plan_get(c.p, c.y, y, (size_t)n * sizeof *y);
    fill(x, n, 1);
    int64_t bad = -1;
    for (int64_t i = 0; !s && i < n && bad < 0; i++)
      if (y[i] != 2.0f * x[i]) bad = i;
    EXPECT(!s && bad < 0, "round trip of %lld floats: %s (first wrong element %lld)", (long long)n,
           s ? nb_last_error() : "values", (long long)bad);
  } else {
    EXPECT(0, "round trip of %lld floats: %s", (long long)n, s ? nb_last_error() : "no memory");
  }
  free(x);
  free(y);
  chain_free(&c);
}

/* Input k+1 is uploaded while run k, which reads input k last, is queued.
 * Meaningful only while the run is still going when the upload lands:
 * the times printed say how long the result took after set_input
 * returned (a broken landing order fails here when that is long). */
static void check_ordering(nb_backend *gpu, nb_state *st, int64_t n) {
  chain c;
  nb_status s = chain_new(gpu, st, n, 24, &c);
  float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
  if (!x || !y) s = nb_error(NB_ERR_OOM, "no memory");
  int wrong = 0;
  double upload_ms = 0, after_ms = 0;
  if (!s) {
    fill(x, n, 0);
    s = nb_plan_set_input(c.p, c.x, x, (size_t)n * sizeof *x);
  }
  for (int k = 0; k < 6 && !s; k++) {
    s = nb_plan_run(c.p);
    fill(x, n, k + 1);
    double t0 = now();
    if (!s) s = nb_plan_set_input(c.p, c.x, x, (size_t)n * sizeof *x);
    double t1 = now();
    if (!s) s = nb_plan_get(c.p, c.y, y, (size_t)n * sizeof *y);
    double t2 = now();
    if (k > 0) { /* after the warm-up run */
      upload_ms += 1e3 * (t1 - t0) / 5;
      after_ms += 1e3 * (t2 - t1) / 5;
    }
    fill(x, n, k);
    for (int64_t i = 0; !s && i < n; i++)
      if (y[i] != 2.0f * x[i]) {
        wrong++;
        printf("run %d: y[%lld] = %g, want %g (2x of input %d)\n", k, (long long)i, (double)y[i],
               2.0 * x[i], k);
        break;
      }
  }
  EXPECT(!s, "ordering (%lld floats): %s", (long long)n, s ? nb_last_error() : "");
  EXPECT(!wrong, "ordering (%lld floats): %d runs read an input uploaded after them", (long long)n,
         wrong);
  if (!s)
    printf("ordering, %lld floats: set_input took %.2f ms, the run's result came %.2f ms later%s\n",
           (long long)n, upload_ms, after_ms,
           after_ms < 1.0 ? " (short: this check may not catch a misordered landing)" : "");
  free(x);
  free(y);
  chain_free(&c);
}

/* An upload of more pieces than the ring has (80 MiB, 10 pieces) while a
 * long run is queued: the 9th piece waits for a slot whose copy lands
 * after that run; the data must arrive whole. */
static void check_ring_wrap(nb_backend *gpu, nb_state *st) {
  const int64_t n = (int64_t)20 << 20;
  chain busy, big;
  nb_status s = chain_new(gpu, st, 1024, 96, &busy);
  if (!s) s = chain_new(gpu, st, n, 0, &big);
  float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y), small[1024];
  if (!s && (!x || !y)) s = nb_error(NB_ERR_OOM, "no memory");
  nb_memory_stats m0, m1;
  if (!s) {
    fill(small, 1024, 5);
    fill(x, n, 6);
    s = nb_plan_set_input(busy.p, busy.x, small, sizeof small);
  }
  if (!s) s = nb_backend_memory_stats(gpu, &m0);
  if (!s) s = nb_plan_run(busy.p);
  if (!s) s = nb_plan_set_input(big.p, big.x, x, (size_t)n * sizeof *x);
  if (!s) s = nb_backend_memory_stats(gpu, &m1);
  memset(x, 0xff, (size_t)n * sizeof *x);
  if (!s) s = nb_plan_run(big.p);
  if (!s) s = nb_plan_get(big.p, big.y, y, (size_t)n * sizeof *y);
  int64_t bad = -1;
  if (!s) {
    fill(x, n, 6);
    for (int64_t i = 0; i < n && bad < 0; i++)
      if (y[i] != 2.0f * x[i]) bad = i;
  }
  EXPECT(!s && bad < 0, "ring wrap (80 MiB behind a long run): %s (first wrong element %lld)",
         s ? nb_last_error() : "values", (long long)bad);
  if (!s)
    printf("ring wrap: %llu pieces, the host waited %llu times for a staging buffer (0: the run "
           "ended before the ring wrapped)\n",
           (unsigned long long)(m1.uploads - m0.uploads),
           (unsigned long long)(m1.upload_waits - m0.upload_waits));
  free(x);
  free(y);
  chain_free(&busy);
  chain_free(&big);
}

/* The figures: a long run, a large upload, and both issued together. */
static void report_overlap(nb_backend *gpu, nb_state *st) {
  const int64_t n = (int64_t)16 << 20; /* 64 MiB */
  chain c, up;
  nb_status s = chain_new(gpu, st, 1024, 48, &c);
  if (!s) s = chain_new(gpu, st, n, 0, &up);
  float *x = malloc((size_t)n * sizeof *x), y;
  if (s || !x) {
    EXPECT(0, "overlap figures: %s", s ? nb_last_error() : "no memory");
    free(x);
    return;
  }
  fill(x, n, 3);
  float small[1024];
  fill(small, 1024, 3);
  s = nb_plan_set_input(c.p, c.x, small, sizeof small);
  double t_run = 1e9, t_up = 1e9, t_both = 1e9;
  for (int r = 0; r < 4 && !s; r++) { /* best of 4, after a warm-up round */
    double t0 = now();
    s = nb_plan_run(c.p);
    if (!s) s = nb_plan_get(c.p, c.y, &y, sizeof y);
    double t1 = now();
    if (!s) s = nb_plan_set_input(up.p, up.x, x, (size_t)n * sizeof *x);
    if (!s) s = nb_plan_get(c.p, c.y, &y, sizeof y); /* waits for the upload's landing */
    double t2 = now();
    if (!s) s = nb_plan_run(c.p);
    if (!s) s = nb_plan_set_input(up.p, up.x, x, (size_t)n * sizeof *x);
    if (!s) s = nb_plan_get(c.p, c.y, &y, sizeof y);
    double t3 = now();
    if (r == 0) continue;
    if (t1 - t0 < t_run) t_run = t1 - t0;
    if (t2 - t1 < t_up) t_up = t2 - t1;
    if (t3 - t2 < t_both) t_both = t3 - t2;
  }
  EXPECT(!s, "overlap figures: %s", s ? nb_last_error() : "");
  if (!s)
    printf("run %.2f ms, 64 MiB upload %.2f ms (%.1f GB/s), both issued together %.2f ms "
           "(%.2f ms if they did not overlap)\n",
           1e3 * t_run, 1e3 * t_up, (double)n * 4 / t_up / 1e9, 1e3 * t_both, 1e3 * (t_run + t_up));
  free(x);
  chain_free(&c);
  chain_free(&up);
}

int main(void) {
  nb_backend *gpu = NULL;
  nb_status s = nb_backend_new("cuda:0", &gpu);
  if (s) {
    printf("SKIPPED: %s\n", nb_last_error());
    return SKIP_CODE;
  }
  nb_state *st = NULL;
  s = nb_state_new(gpu, &st);
  if (s) {
    printf("FAIL: nb_state_new: %s\n", nb_last_error());
    return 1;
  }
  /* below, at and above 64 KiB, a piece (8 MiB = 2^21 floats) and a bit */
  const int64_t sizes[] = {1,
                           1000,
                           16383,
                           16384,
                           16385,
                           300000,
                           (int64_t)1 << 21,
                           ((int64_t)1 << 21) + 5,
                           (int64_t)6 << 20};
  nb_memory_stats m0, m1;
  EXPECT(nb_backend_memory_stats(gpu, &m0) == NB_OK, "memory stats: %s", nb_last_error());
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) check_round_trip(gpu, st, sizes[i]);
  EXPECT(nb_backend_memory_stats(gpu, &m1) == NB_OK, "memory stats: %s", nb_last_error());
  /* (each plan's compile uploads its constants too: the totals below are
   * a summary, the exact counts are checked per input above) */
  uint64_t up = m1.uploads - m0.uploads, async = m1.uploads_async - m0.uploads_async;
  printf("round trips: %llu pieces uploaded, %llu on the copy stream, %llu waits, %.1f MiB "
         "staging\n",
         (unsigned long long)up, (unsigned long long)async,
         (unsigned long long)(m1.upload_waits - m0.upload_waits), (double)m1.staging / 1048576.0);
  EXPECT(m1.staging > 0 && m1.staging <= (size_t)8 * 2 * (8 << 20),
         "%zu bytes of staging: want some, at most 8 slots of 8 MiB pinned + landing", m1.staging);
  check_ordering(gpu, st, 1000);                   /* a direct upload */
  check_ordering(gpu, st, (int64_t)1 << 20);       /* through the copy stream */
  check_ordering(gpu, st, ((int64_t)5 << 20) + 3); /* in pieces */
  check_ring_wrap(gpu, st);
  report_overlap(gpu, st);
  nb_state_free(st);
  nb_backend_free(gpu);
  if (failures) {
    printf("%d check(s) failed\n", failures);
    return 1;
  }
  printf("transfers: every check passed\n");
  return 0;
}
