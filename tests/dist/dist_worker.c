#define _POSIX_C_SOURCE 200809L /* _exit */
/* The program tests/dist/dist_mpi.sh runs with and without mpirun:
 *
 *   dist_worker train OUT [--mismatch]
 *     trains a small CNN on synthetic data with nb_fit (global batch 32,
 *     gradient clipping on): OUT/sgd and OUT/adam for 2 epochs, OUT/half
 *     for 1 and OUT/rest resuming from it for the second; rank 0 writes
 *     weights.safetensors and metrics.txt in each. --mismatch: one run in
 *     which the last rank has another batch size.
 *   dist_worker compare A B TOL
 *     exits 1 unless every tensor of A/weights.safetensors is within TOL x
 *     its largest magnitude of B's, and the metrics (when both have them)
 *     agree to TOL.
 *   dist_worker die
 *     the last rank exits at once with code 3 while the others wait in a
 *     barrier: the launcher must end the job, not hang.
 *
 * Exit codes follow `nabla train`: an error every rank returned is exit 1
 * on every rank; an error of one rank ends the job (nb_dist_abort). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nabla/nabla.h"

static const char *cfg = "[net]\n"
                         "input = 1, 8, 8\n"
                         "classes = 3\n"
                         "[train]\n"
                         "epochs = 2\n"
                         "batch = 32\n"
                         "optimizer = sgd\n"
                         "momentum = 0.9\n"
                         "clip_grad_norm = 1.0\n"
                         "[conv2d c1]\n"
                         "out = 4\n"
                         "kernel = 3\n"
                         "activation = relu\n"
                         "[maxpool2d]\n"
                         "kernel = 2\n"
                         "[flatten]\n"
                         "[linear fc]\n"
                         "out = 3\n";

/* label = which third of the image holds the brightest band of rows */
static nb_status make_data(nb_dataset *d, int64_t n, uint64_t seed) {
  int64_t shape[3] = {1, 8, 8};
  nb_status st = nb_dataset_alloc(d, n, 3, shape);
  if (!st) st = nb_dataset_set_classes(d, 3, NULL);
  if (st) return st;
  nb_rng r;
  nb_rng_seed(&r, seed);
  for (int64_t i = 0; i < n; i++) {
    int64_t label = (int64_t)(nb_rng_next(&r) % 3);
    d->y[i] = label;
    for (int p = 0; p < 64; p++)
      d->x[i * 64 + p] = (float)nb_rng_uniform(&r) * 0.5f + (p / 8 / 3 == label ? 1.0f : 0.0f);
  }
  return NB_OK;
}

static int finish(nb_dist *d, nb_status st) {
  int code = 0;
  if (st) {
    fprintf(stderr, "dist_worker: rank %d/%d: %s\n", nb_dist_rank(d), nb_dist_size(d),
            nb_last_error());
    if (nb_dist_size(d) > 1 && !nb_dist_failed_together(d)) nb_dist_abort(d, 1, NULL);
    code = 1;
  }
  nb_dist_free(d);
  return code;
}

/* One nb_fit into out/name (a fresh state each time). */
static nb_status fit_one(nb_dist *d, const nb_model *m, const nb_dataset *tr, const nb_dataset *te,
                         const char *out, const char *name, int adam, int epochs,
                         const char *resume, int mismatch) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/%s", out, name);
  nb_backend *be = NULL;
  nb_state *state = NULL;
  nb_fit_result res;
  nb_status st = nb_backend_new("cpu", &be);
  if (!st) st = nb_state_new(be, &state);
  if (!st) {
    nb_fit_options o = nb_fit_defaults();
    o.optimizer = adam ? NB_RECIPE_ADAM : NB_RECIPE_SGD;
    o.lr = adam ? 0.01f : 0.05f;
    o.epochs = epochs;
    o.batch = mismatch && nb_dist_rank(d) == nb_dist_size(d) - 1 ? 16 : 32;
    o.eval_batch = 20;
    o.out_dir = dir;
    o.resume = resume;
    o.progress = NB_PROGRESS_OFF;
    o.dist = d;
    st = nb_fit(m, be, state, tr, te, &o, &res);
  }
  if (!st && nb_dist_rank(d) == 0) {
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
      st = nb_error(NB_ERR_IO, "cannot write %s", path);
    } else {
      fprintf(f, "%.9g %.9g %.9g %.9g\n", res.test_loss, res.test_accuracy, res.train_loss,
              res.train_accuracy);
      fclose(f);
    }
  }
  nb_state_free(state);
  nb_backend_free(be);
  return st;
}

/* Every run in one process (or one job: an MPI start costs seconds under
 * ASan): out/sgd and out/adam for 2 epochs; out/half for 1 epoch and
 * out/rest resuming from its checkpoint for the second. */
static int train(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *out = argv[2];
  int mismatch = argc > 3 && !strcmp(argv[3], "--mismatch");
  nb_dist *d = NULL;
  nb_status st = nb_dist_init(NB_DIST_AUTO, &d);
  if (st) return finish(d, st);
  nb_model *m = NULL;
  nb_dataset tr, te;
  memset(&tr, 0, sizeof tr);
  memset(&te, 0, sizeof te);
  st = nb_model_parse(cfg, "<dist_worker>", &m);
  if (!st) st = make_data(&tr, 256, 5);
  if (!st) st = make_data(&te, 101, 6); /* 101: uneven evaluation shards */
  char ckpt[1100];
  snprintf(ckpt, sizeof ckpt, "%s/half/checkpoint.safetensors", out);
  if (!st && mismatch) st = fit_one(d, m, &tr, &te, out, "mismatch", 0, 1, NULL, 1);
  if (!st && !mismatch) st = fit_one(d, m, &tr, &te, out, "sgd", 0, 2, NULL, 0);
  if (!st && !mismatch) st = fit_one(d, m, &tr, &te, out, "adam", 1, 2, NULL, 0);
  if (!st && !mismatch) st = fit_one(d, m, &tr, &te, out, "half", 1, 1, NULL, 0);
  if (!st && !mismatch) st = fit_one(d, m, &tr, &te, out, "rest", 1, 2, ckpt, 0);
  nb_dataset_free(&tr);
  nb_dataset_free(&te);
  nb_model_free(m);
  return finish(d, st);
}

static int read_metrics(const char *dir, double *v) {
  char path[1024];
  snprintf(path, sizeof path, "%s/metrics.txt", dir);
  FILE *f = fopen(path, "r");
  int n = f ? fscanf(f, "%lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3]) : 0;
  if (f) fclose(f);
  return n == 4;
}

static int compare(const char *a, const char *b, double tol) {
  char pa[1024], pb[1024];
  snprintf(pa, sizeof pa, "%s/weights.safetensors", a);
  snprintf(pb, sizeof pb, "%s/weights.safetensors", b);
  nb_safetensors *fa = NULL, *fb = NULL;
  nb_status st = nb_safetensors_open(pa, &fa);
  if (!st) st = nb_safetensors_open(pb, &fb);
  if (st) {
    fprintf(stderr, "compare: %s\n", nb_last_error());
    return 1;
  }
  int bad = nb_safetensors_count(fa) != nb_safetensors_count(fb) || nb_safetensors_count(fa) == 0;
  double worst = 0;
  for (int i = 0; !bad && i < nb_safetensors_count(fa); i++) {
    const nb_safetensors_info *ia = nb_safetensors_tensor(fa, i);
    int j = nb_safetensors_find(fb, ia->name);
    if (j < 0 || nb_safetensors_tensor(fb, j)->bytes != ia->bytes || ia->dtype != NB_F32) {
      bad = 1;
      break;
    }
    size_t n = (size_t)ia->bytes / sizeof(float);
    float *x = malloc(ia->bytes), *y = malloc(ia->bytes);
    if (!x || !y || nb_safetensors_read(fa, i, x, ia->bytes) ||
        nb_safetensors_read(fb, j, y, ia->bytes)) {
      bad = 1;
    } else {
      double scale = 0, diff = 0;
      for (size_t k = 0; k < n; k++) {
        if (fabs(x[k]) > scale) scale = fabs(x[k]);
        if (fabs((double)x[k] - y[k]) > diff) diff = fabs((double)x[k] - y[k]);
      }
      double rel = diff / (scale > 0 ? scale : 1);
      if (rel > worst) worst = rel;
      if (rel > tol) {
        fprintf(stderr, "compare: %s differs by %.3g (%.3g of its largest magnitude %.3g)\n",
                ia->name, diff, rel, scale);
        bad = 1;
      }
    }
    free(x);
    free(y);
  }
  nb_safetensors_close(fa);
  nb_safetensors_close(fb);
  /* runs of `nabla train` leave no metrics.txt: weights only */
  double ma[4] = {0}, mb[4] = {0};
  int ha = read_metrics(a, ma), hb = read_metrics(b, mb);
  if (ha != hb) {
    fprintf(stderr, "compare: metrics.txt in only one of %s and %s\n", a, b);
    return 1;
  }
  for (int k = 0; ha && k < 4; k++)
    if (fabs(ma[k] - mb[k]) > tol * fmax(1.0, fabs(ma[k]))) {
      fprintf(stderr, "compare: metric %d is %.9g against %.9g\n", k, ma[k], mb[k]);
      bad = 1;
    }
  printf("compare %s %s: weights within %.3g of their scale, test loss %.9g / %.9g, test "
         "accuracy %.6g / %.6g%s\n",
         a, b, worst, ma[0], mb[0], ma[1], mb[1], bad ? "  FAIL" : "");
  return bad;
}

static int die(void) {
  nb_dist *d = NULL;
  nb_status st = nb_dist_init(NB_DIST_AUTO, &d);
  if (st) return finish(d, st);
  if (nb_dist_rank(d) == nb_dist_size(d) - 1) {
    fprintf(stderr, "dist_worker: rank %d exits without finishing\n", nb_dist_rank(d));
    _exit(3); /* as a crash would: no MPI_Finalize, no leak check at exit */
  }
  return finish(d, nb_dist_barrier(d)); /* never completes: the launcher ends it */
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "train")) return train(argc, argv);
  if (argc == 5 && !strcmp(argv[1], "compare")) return compare(argv[2], argv[3], atof(argv[4]));
  if (argc == 2 && !strcmp(argv[1], "die")) return die();
  fprintf(stderr, "usage: dist_worker train OUT [--mismatch]\n"
                  "       dist_worker compare A B TOL\n"
                  "       dist_worker die\n");
  return 2;
}
