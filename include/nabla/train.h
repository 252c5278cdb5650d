/* nabla training utilities: learning-rate schedules, classification metrics
 * (confusion matrix, scikit-learn style report) and a progress display.
 *
 * None of this touches graphs or devices: a schedule gives the number that
 * nb_optimizer_feed() takes, metrics count predictions read back from a plan,
 * and the progress display writes text to a FILE*. docs/training.md shows them
 * working together. */
#ifndef NABLA_TRAIN_H
#define NABLA_TRAIN_H

#include <stdio.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- learning-rate schedules ---------------------------------------------- */

typedef enum nb_schedule_kind {
  NB_SCHEDULE_CONSTANT = 0, /* lr */
  NB_SCHEDULE_STEP,         /* lr * gamma^floor((step - 1) / step_size): torch StepLR */
  NB_SCHEDULE_COSINE,       /* torch CosineAnnealingLR(T_max = total_steps, eta_min = min_lr) */
  NB_SCHEDULE_ONE_CYCLE,    /* torch OneCycleLR(max_lr = lr, total_steps, ...) */
  NB_SCHEDULE_WARMUP_COSINE /* linear warm-up to lr, then cosine down to min_lr */
} nb_schedule_kind;

/* A learning-rate schedule: plain data, copyable, nothing to free. Fill it
 * with one of the nb_schedule_* constructors below and adjust fields if
 * needed; fields a kind does not use are ignored.
 *
 * Steps are 1-based like nb_optimizer_feed(): step 1 is the first update,
 * so `nb_optimizer_feed(opt, plan, t, nb_schedule_lr(&s, t))` is the whole
 * integration. Update t uses the lr that a torch scheduler reports after
 * t - 1 calls of scheduler.step(). */
typedef struct nb_schedule {
  nb_schedule_kind kind;
  double lr;               /* base lr; the peak (max_lr) for one-cycle and warm-up */
  double min_lr;           /* cosine, warm-up + cosine: the final lr */
  int64_t total_steps;     /* cosine: T_max; one-cycle, warm-up + cosine: updates in all */
  int64_t step_size;       /* step: updates between decays */
  double gamma;            /* step: decay factor */
  int64_t warmup_steps;    /* warm-up + cosine: length of the linear ramp */
  double pct_start;        /* one-cycle: fraction of total_steps spent rising (0.3) */
  double div_factor;       /* one-cycle: initial lr = lr / div_factor (25) */
  double final_div_factor; /* one-cycle: final lr = initial lr / final_div_factor (1e4) */
  int three_phase;         /* one-cycle: torch's three_phase=True (0) */
  int anneal_linear;       /* one-cycle: anneal_strategy='linear' instead of 'cos' (0) */
} nb_schedule;

/* Always `lr`. */
nb_schedule nb_schedule_constant(double lr);
/* lr, multiplied by gamma after every step_size updates (torch StepLR). */
nb_schedule nb_schedule_step(double lr, int64_t step_size, double gamma);
/* Half a cosine from lr (update 1) to min_lr (update total_steps + 1, and
 * every update after it), exactly torch CosineAnnealingLR(T_max =
 * total_steps, eta_min = min_lr). Unlike torch it does not rise again after
 * T_max. */
nb_schedule nb_schedule_cosine(double lr, double min_lr, int64_t total_steps);
/* torch OneCycleLR(max_lr, total_steps) with its defaults: pct_start 0.3,
 * div_factor 25, final_div_factor 1e4, cosine annealing, two phases. The lr
 * rises from max_lr / 25 at update 1 to max_lr near update 0.3 * total_steps
 * and falls to max_lr / 25 / 1e4 at update total_steps, and stays there (torch
 * raises an error past total_steps). Only the lr is scheduled: torch's
 * momentum cycling (cycle_momentum) has no counterpart. */
nb_schedule nb_schedule_one_cycle(double max_lr, int64_t total_steps);
/* Update t <= warmup_steps: lr * t / warmup_steps; then a half cosine from lr
 * at update warmup_steps to min_lr at update total_steps (and after):
 * min_lr + (lr - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2. Equal to
 * torch SequentialLR([LinearLR(start_factor = 1/W, total_iters = W - 1),
 * CosineAnnealingLR(T_max = T - W, eta_min = min_lr)], milestones = [W - 1]).
 * warmup_steps 0 is a plain cosine that starts one update further on. */
nb_schedule nb_schedule_warmup_cosine(double lr, double min_lr, int64_t warmup_steps,
                                      int64_t total_steps);

/* Checks a schedule's fields (positive lr and lengths, gamma > 0,
 * 0 <= pct_start <= 1, ...); NB_ERR_INVALID_ARG with a message naming the
 * field otherwise. */
nb_status nb_schedule_check(const nb_schedule *s);
/* The learning rate for update number `step` (1-based; steps below 1 count
 * as 1). NaN for a NULL schedule or one that nb_schedule_check() rejects. */
double nb_schedule_lr(const nb_schedule *s, int64_t step);
/* One line describing the schedule ("one-cycle max_lr 0.003 over 1874
 * updates (pct_start 0.3, ...)") into buf (always NUL-terminated); returns
 * buf. For logs. */
char *nb_schedule_describe(const nb_schedule *s, char *buf, size_t cap);

/* ---- classification metrics ----------------------------------------------- */

/* A confusion matrix over `classes` classes that accumulates batches of
 * (prediction, label) pairs. Rows are true labels, columns predictions, like
 * sklearn.metrics.confusion_matrix. */
typedef struct nb_confusion nb_confusion;

/* Scores of one class or one average, as in sklearn's
 * precision_recall_fscore_support with zero_division=0: a ratio with a zero
 * denominator is 0 (precision of a class never predicted, recall of a class
 * with no samples). */
typedef struct nb_class_metrics {
  double precision, recall, f1;
  int64_t support; /* samples whose true label is the class (all samples for averages) */
} nb_class_metrics;

/* classes >= 1 (and small enough to allocate classes^2 counts). */
nb_status nb_confusion_new(int classes, nb_confusion **out);
void nb_confusion_free(nb_confusion *c);
/* Sets every count to zero (for the next epoch). */
void nb_confusion_reset(nb_confusion *c);
int nb_confusion_classes(const nb_confusion *c);
/* Adds n pairs. Every value must be in [0, classes); otherwise nothing is
 * added and the error names the first bad index. */
nb_status nb_confusion_add(nb_confusion *c, const int64_t *pred, const int64_t *label, int64_t n);
/* Adds a whole classes x classes matrix of counts (row = true label,
 * column = prediction), such as another matrix's summed over ranks. Counts
 * must be >= 0; otherwise nothing is added. */
nb_status nb_confusion_add_counts(nb_confusion *c, const int64_t *counts);
/* Number of samples with true label `label` predicted as `pred` (0 when out
 * of range). */
int64_t nb_confusion_count(const nb_confusion *c, int label, int pred);
/* Samples added since creation or the last reset. */
int64_t nb_confusion_total(const nb_confusion *c);
/* Fraction of samples predicted correctly (0 when empty). */
double nb_confusion_accuracy(const nb_confusion *c);
/* Precision, recall, F1 and support of class k. */
nb_status nb_confusion_class(const nb_confusion *c, int k, nb_class_metrics *out);
/* Unweighted mean of the per-class scores (sklearn average='macro'). */
nb_class_metrics nb_confusion_macro(const nb_confusion *c);
/* Mean of the per-class scores weighted by support (average='weighted'). */
nb_class_metrics nb_confusion_weighted(const nb_confusion *c);

/* Writes the report that sklearn.metrics.classification_report(y_true,
 * y_pred, labels=range(classes), target_names=names, digits=digits,
 * zero_division=0) returns, byte for byte: one row per class, then
 * "accuracy" (or "micro avg" when some class has neither samples nor
 * predictions, as sklearn does when given labels), "macro avg" and
 * "weighted avg". `names` holds `classes` class names, or is NULL for
 * "0", "1", ...; digits is in [0, 15] (sklearn's default is 2). */
nb_status nb_confusion_report(const nb_confusion *c, FILE *f, const char *const *names, int digits);
/* Writes the matrix as a table: a header of predicted class names, then one
 * row per true class, right-aligned counts. `names` may be NULL. */
nb_status nb_confusion_print(const nb_confusion *c, FILE *f, const char *const *names);

/* ---- progress display ----------------------------------------------------- */

typedef enum nb_progress_mode {
  NB_PROGRESS_AUTO = 0, /* BAR when the FILE*'s descriptor is a terminal, else LOG */
  NB_PROGRESS_BAR,      /* one line redrawn in place with '\r' */
  NB_PROGRESS_LOG,      /* plain lines: every log_pct % / log_seconds s, and at the end */
  NB_PROGRESS_OFF       /* prints nothing */
} nb_progress_mode;

/* A progress display for one pass over `total` steps (an epoch):
 *
 *   epoch 1/2 [=========>      ] 512/937  1834 img/s  ETA 0:23  loss 0.1234  acc 0.9512
 *
 * The rate is an exponential moving average (weight 0.3 for the newest
 * sample, like tqdm) of the throughput between updates at least 0.1 s apart,
 * and the ETA is the remaining work at that rate. */
typedef struct nb_progress nb_progress;

/* Returns the current time in seconds from any fixed origin. */
typedef double (*nb_clock_fn)(void *ctx);

/* `label` is copied ("epoch 1/2"); total <= 0 means unknown (no bar, no
 * ETA). The file stays the caller's. */
nb_status nb_progress_new(FILE *f, const char *label, int64_t total, nb_progress_mode mode,
                          nb_progress **out);
/* The mode in use (AUTO resolved to BAR or LOG). */
nb_progress_mode nb_progress_get_mode(const nb_progress *p);
/* Rate unit and items per step: ("img", batch size) shows images/s when
 * steps are batches. Default ("it", 1). */
nb_status nb_progress_set_unit(nb_progress *p, const char *unit, double per_step);
/* LOG mode: a line whenever `pct` percent of total more is done or
 * `seconds` have passed since the last line; 0 turns a trigger off.
 * Default 10 % and 10 s. */
nb_status nb_progress_set_log_interval(nb_progress *p, double pct, double seconds);
/* Width of the bar between the brackets (default 30, 1..200). */
nb_status nb_progress_set_width(nb_progress *p, int width);
/* Replaces the monotonic clock (tests, simulations) and restarts timing from
 * the new clock's present; call it before the first update. */
nb_status nb_progress_set_clock(nb_progress *p, nb_clock_fn clock, void *ctx);
/* Reports `done` steps finished (0..total) and the current value of
 * n_metrics named metrics ("loss", "acc"), printed with 4 decimals. Redraws
 * the bar at most every 0.1 s (always when done reaches total). */
nb_status nb_progress_update(nb_progress *p, int64_t done, int n_metrics, const char *const *names,
                             const double *values);
/* Final line for the pass, with the elapsed time and mean rate in place of
 * the ETA and the metrics of the last update; ends BAR mode's line. */
nb_status nb_progress_end(nb_progress *p);
void nb_progress_free(nb_progress *p);

#ifdef __cplusplus
}
#endif

#endif
