/* The training loop's collectives for data-parallel runs (fit_dist.h), and
 * evaluation split across ranks. Mismatched ranks are caught by comparing
 * small fingerprints (nb_dist_check_same) before any large transfer, so a
 * wrong model file or option on one rank is a clear error on every rank
 * instead of a broadcast of mismatched sizes that would hang or crash. */
#include <stdlib.h>
#include <string.h>

#include "../graph/graph_internal.h"
#include "fit_dist.h"
#include "nabla/nabla.h"

/* ---- fingerprints (FNV-1a, 64 bit) ------------------------------------------- */

#define FNV_BASIS 0xcbf29ce484222325ull

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

static uint64_t fnv_str(uint64_t h, const char *s) {
  return fnv(h, s ? s : "", strlen(s ? s : "") + 1);
}

/* Labels, shape and about a thousand examples' features: enough to tell
 * different files, limits or normalisations apart without hashing
 * hundreds of megabytes. */
static int64_t data_checksum(const nb_dataset *d) {
  uint64_t h = FNV_BASIS;
  if (!d || !d->n) return (int64_t)h;
  h = fnv(h, &d->n, sizeof d->n);
  h = fnv(h, d->shape, (size_t)d->ndim * sizeof *d->shape);
  if (d->y) h = fnv(h, d->y, (size_t)d->n * sizeof *d->y);
  int64_t every = d->n / 1024 > 1 ? d->n / 1024 : 1;
  for (int64_t i = 0; d->x && i < d->n; i += every)
    h = fnv(h, d->x + i * d->example_numel, (size_t)d->example_numel * sizeof(float));
  return (int64_t)h;
}

/* The recipe's settings other than those compared one by one. */
static int64_t recipe_checksum(const nb_recipe *r) {
  uint64_t h = FNV_BASIS;
  const float f[] = {r->lr,
                     r->momentum,
                     r->weight_decay,
                     r->beta1,
                     r->beta2,
                     r->eps,
                     r->gamma,
                     r->min_lr,
                     r->pct_start,
                     r->div_factor,
                     r->final_div_factor,
                     r->label_smoothing,
                     r->clip_grad_norm};
  const int64_t i[] = {r->nesterov, r->warmup,        r->step_size, r->crop_padding,
                       r->hflip,    r->norm_channels, r->precision};
  h = fnv(h, f, sizeof f);
  h = fnv(h, i, sizeof i);
  h = fnv(h, r->mean, sizeof r->mean);
  h = fnv(h, r->std, sizeof r->std);
  return (int64_t)h;
}

nb_status nb_fit_dist_check_config(nb_dist *d, const nb_recipe *r, const nb_dataset *train,
                                   const nb_dataset *test, int resuming) {
  int n = nb_dist_size(d);
  if (n <= 1) return NB_OK;
  static const char *const names[] = {
      "the global batch size",
      "the seed",
      "the number of epochs",
      "the optimizer",
      "the schedule",
      "the recipe's other settings (lr, momentum, ...)",
      "the number of training examples",
      "a checksum of the training data",
      "the number of test examples",
      "a checksum of the test data",
      "resuming from a checkpoint (--resume)",
  };
  const int64_t values[] = {
      r->batch,
      (int64_t)r->seed,
      r->epochs,
      r->optimizer,
      r->schedule,
      recipe_checksum(r),
      train->n,
      data_checksum(train),
      test ? test->n : -1,
      data_checksum(test),
      resuming != 0,
  };
  nb_status st = nb_dist_check_same(d, (int)(sizeof values / sizeof values[0]), names, values);
  if (st) return st;
  /* the same on every rank from here: the ranks agree on these values */
  if (train->n < r->batch) {
    nb_dist_set_failed_together(d);
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_fit: %lld training examples, fewer than one batch of %d",
                    (long long)train->n, r->batch);
  }
  if (r->batch % n) {
    nb_dist_set_failed_together(d);
    return nb_error(NB_ERR_INVALID_ARG,
                    "the global batch %d does not split over %d ranks; pass a --batch divisible "
                    "by %d (each rank takes batch / ranks examples of every batch)",
                    r->batch, n, n);
  }
  return NB_OK;
}

nb_status nb_fit_dist_check_graph(nb_dist *d, const nb_graph *g, const nb_state *st) {
  if (nb_dist_size(d) <= 1) return NB_OK;
  uint64_t h = FNV_BASIS;
  int nodes = nb_graph_node_count(g);
  for (int i = 0; i < nodes; i++) {
    const nb_tensor *t = nb_graph_node(g, i);
    int nd = nb_tensor_ndim(t);
    int32_t head[2] = {(int32_t)nb_tensor_dtype(t), nd};
    h = fnv_str(h, nb_tensor_op_name(t));
    h = fnv_str(h, nb_tensor_name(t));
    h = fnv(h, head, sizeof head);
    h = fnv(h, nb_tensor_shape(t), (size_t)nd * sizeof(int64_t));
  }
  uint64_t hs = FNV_BASIS;
  int vars = nb_state_count(st);
  for (int i = 0; i < vars; i++) {
    const char *name = NULL;
    nb_dtype dt = NB_F32;
    int nd = 0;
    const int64_t *shape = NULL;
    nb_status rc = nb_state_entry(st, i, &name, &dt, &nd, &shape);
    if (rc) return rc;
    int32_t head[2] = {(int32_t)dt, nd};
    hs = fnv_str(hs, name);
    hs = fnv(hs, head, sizeof head);
    hs = fnv(hs, shape, (size_t)nd * sizeof *shape);
  }
  static const char *const names[] = {
      "the number of nodes of the training step",
      "a checksum of the training step's graph (ops, shapes and names: the model file)",
      "the number of variables in the state",
      "a checksum of the state's variable names and shapes",
  };
  const int64_t values[] = {nodes, (int64_t)h, vars, (int64_t)hs};
  return nb_dist_check_same(d, 4, names, values);
}

/* Broadcasts variable `name` of `bytes` bytes from rank 0. */
static nb_status broadcast_var(nb_dist *d, nb_state *st, const char *name, size_t bytes, void **buf,
                               size_t *cap) {
  if (bytes > *cap) {
    void *b = realloc(*buf, bytes);
    if (!b) return nb_error(NB_ERR_OOM, "broadcasting '%s': out of memory", name);
    *buf = b;
    *cap = bytes;
  }
  nb_status rc = nb_dist_rank(d) == 0 ? nb_state_read(st, name, *buf, bytes) : NB_OK;
  if (!rc) rc = nb_dist_broadcast(d, *buf, bytes, 0);
  if (!rc && nb_dist_rank(d) != 0) rc = nb_state_write(st, name, *buf, bytes);
  return rc;
}

nb_status nb_fit_dist_broadcast_state(nb_dist *d, nb_state *st) {
  if (nb_dist_size(d) <= 1) return NB_OK;
  void *buf = NULL;
  size_t cap = 0;
  nb_status rc = NB_OK;
  for (int i = 0; !rc && i < nb_state_count(st); i++) {
    const char *name = NULL;
    nb_dtype dt = NB_F32;
    int nd = 0;
    const int64_t *shape = NULL;
    rc = nb_state_entry(st, i, &name, &dt, &nd, &shape);
    if (!rc)
      rc = broadcast_var(d, st, name, (size_t)nb_shape_numel(nd, shape) * nb_dtype_size(dt), &buf,
                         &cap);
  }
  free(buf);
  return rc;
}

/* Variables that an assign of the step writes and that are neither trained
 * nor an optimizer's moments. */
static int is_buffer_assign(const nb_tensor *t) {
  if (t->op != NB_OP_ASSIGN) return 0;
  const nb_tensor *v = t->in[0];
  return v->op == NB_OP_VARIABLE && !(v->flags & NB_FLAG_REQUIRES_GRAD) && v->name &&
         !nb_optimizer_owns(v->name);
}

nb_status nb_fit_dist_sync_buffers(nb_dist *d, const nb_graph *g, nb_state *st) {
  if (nb_dist_size(d) <= 1) return NB_OK;
  void *buf = NULL;
  size_t cap = 0;
  nb_status rc = NB_OK;
  for (int i = 0; !rc && i < g->n_nodes; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!is_buffer_assign(t)) continue;
    const nb_tensor *v = t->in[0];
    rc = broadcast_var(d, st, v->name, (size_t)nb_tensor_numel(v) * nb_dtype_size(v->dtype), &buf,
                       &cap);
  }
  free(buf);
  return rc;
}

nb_status nb_fit_dist_check_weights(nb_dist *d, const nb_graph *g, const nb_state *st,
                                    int64_t epoch) {
  if (nb_dist_size(d) <= 1) return NB_OK;
  uint64_t h = FNV_BASIS;
  void *buf = NULL;
  size_t cap = 0;
  nb_status rc = NB_OK;
  for (int i = 0; !rc && i < g->n_nodes; i++) {
    const nb_tensor *v = g->nodes[i];
    if (v->op != NB_OP_VARIABLE || !(v->flags & NB_FLAG_REQUIRES_GRAD)) continue;
    size_t bytes = (size_t)nb_tensor_numel(v) * nb_dtype_size(v->dtype);
    if (bytes > cap) {
      void *b = realloc(buf, bytes);
      if (!b) {
        rc = nb_error(NB_ERR_OOM, "checking the weights: out of memory");
        break;
      }
      buf = b;
      cap = bytes;
    }
    rc = nb_state_read(st, v->name, buf, bytes);
    if (!rc) h = fnv(h, buf, bytes);
  }
  free(buf);
  /* a failed read here is a bug on every rank alike; agree before comparing */
  rc = nb_dist_agree(d, rc);
  if (rc) return rc;
  char what[96];
  snprintf(what, sizeof what, "a checksum of the weights after epoch %lld (they diverged)",
           (long long)epoch);
  const char *names[1] = {what};
  const int64_t values[1] = {(int64_t)h};
  return nb_dist_check_same(d, 1, names, values);
}

/* ---- evaluation ----------------------------------------------------------------- */

nb_status nb_evaluate_dist(const nb_model *m, nb_backend *be, nb_state *st, const nb_dataset *data,
                           int64_t batch, nb_dist *dist, nb_confusion *cm, double *loss) {
  int n = nb_dist_size(dist), r = nb_dist_rank(dist);
  if (n <= 1) return nb_evaluate(m, be, st, data, batch, cm, loss);
  if (!m || !be || !st || !data)
    return nb_error(NB_ERR_INVALID_ARG, "nb_evaluate_dist: NULL argument");
  /* contiguous shards, as even as the count allows */
  int64_t lo = data->n * r / n, hi = data->n * (r + 1) / n;
  nb_dataset shard = *data;
  shard.n = hi - lo;
  shard.x = data->x + lo * data->example_numel;
  shard.y = data->y + lo;
  int classes = cm ? nb_confusion_classes(cm) : 0;
  nb_confusion *mine = NULL;
  double sums[2] = {0, 0}, l = 0;
  nb_status rc = classes ? nb_confusion_new(classes, &mine) : NB_OK;
  if (!rc && shard.n > 0) rc = nb_evaluate(m, be, st, &shard, batch, mine, &l);
  rc = nb_dist_agree(dist, rc);
  int64_t *counts = NULL;
  if (!rc && classes) {
    counts = malloc((size_t)classes * (size_t)classes * sizeof *counts);
    if (!counts) rc = nb_error(NB_ERR_OOM, "nb_evaluate_dist: out of memory");
  }
  rc = nb_dist_agree(dist, rc);
  if (!rc) {
    sums[0] = l * (double)shard.n;
    sums[1] = (double)shard.n;
    rc = nb_dist_allreduce_f64(dist, sums, 2, NB_DIST_SUM);
  }
  if (!rc && classes) {
    for (int i = 0; i < classes; i++)
      for (int j = 0; j < classes; j++) counts[i * classes + j] = nb_confusion_count(mine, i, j);
    rc = nb_dist_allreduce(dist, counts, (int64_t)classes * classes, NB_I64, NB_DIST_SUM);
    if (!rc) rc = nb_confusion_add_counts(cm, counts);
  }
  if (!rc && loss) *loss = sums[0] / (sums[1] > 0 ? sums[1] : 1);
  free(counts);
  nb_confusion_free(mine);
  return rc;
}
