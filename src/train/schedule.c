/* Learning-rate schedules as closed-form functions of the update number, so
 * a resumed run gets its lr from the step alone (no scheduler state to
 * checkpoint). Formulas follow torch.optim.lr_scheduler (1.13); the tests
 * compare against values dumped from it. */
#include <math.h>
#include <stdio.h>

#include "nabla/train.h"

static const double PI = 3.14159265358979323846;

static nb_schedule base(nb_schedule_kind kind, double lr) {
  nb_schedule s = {0};
  s.kind = kind;
  s.lr = lr;
  s.gamma = 1.0;
  s.pct_start = 0.3;
  s.div_factor = 25.0;
  s.final_div_factor = 1e4;
  return s;
}

nb_schedule nb_schedule_constant(double lr) { return base(NB_SCHEDULE_CONSTANT, lr); }

nb_schedule nb_schedule_step(double lr, int64_t step_size, double gamma) {
  nb_schedule s = base(NB_SCHEDULE_STEP, lr);
  s.step_size = step_size;
  s.gamma = gamma;
  return s;
}

nb_schedule nb_schedule_cosine(double lr, double min_lr, int64_t total_steps) {
  nb_schedule s = base(NB_SCHEDULE_COSINE, lr);
  s.min_lr = min_lr;
  s.total_steps = total_steps;
  return s;
}

nb_schedule nb_schedule_one_cycle(double max_lr, int64_t total_steps) {
  nb_schedule s = base(NB_SCHEDULE_ONE_CYCLE, max_lr);
  s.total_steps = total_steps;
  return s;
}

nb_schedule nb_schedule_warmup_cosine(double lr, double min_lr, int64_t warmup_steps,
                                      int64_t total_steps) {
  nb_schedule s = base(NB_SCHEDULE_WARMUP_COSINE, lr);
  s.min_lr = min_lr;
  s.warmup_steps = warmup_steps;
  s.total_steps = total_steps;
  return s;
}

/* Writes why `s` is unusable into msg (when given) and returns 0, or returns
 * 1. Separate from nb_schedule_check() so that nb_schedule_lr() can validate
 * without overwriting the caller's last error message. */
static int valid(const nb_schedule *s, char *msg, size_t cap) {
#define BAD(...)                                                                                   \
  do {                                                                                             \
    if (msg) snprintf(msg, cap, __VA_ARGS__);                                                      \
    return 0;                                                                                      \
  } while (0)
  if (!s) BAD("schedule: NULL schedule");
  if (!(s->lr > 0) || !isfinite(s->lr)) BAD("schedule: lr must be finite and > 0 (got %g)", s->lr);
  switch (s->kind) {
  case NB_SCHEDULE_CONSTANT: return 1;
  case NB_SCHEDULE_STEP:
    if (s->step_size < 1)
      BAD("step schedule: step_size must be >= 1 (got %lld)", (long long)s->step_size);
    if (!(s->gamma > 0) || !isfinite(s->gamma))
      BAD("step schedule: gamma must be finite and > 0 (got %g)", s->gamma);
    return 1;
  case NB_SCHEDULE_COSINE:
  case NB_SCHEDULE_WARMUP_COSINE: {
    const char *what = s->kind == NB_SCHEDULE_COSINE ? "cosine" : "warm-up cosine";
    if (!(s->min_lr >= 0) || !(s->min_lr <= s->lr))
      BAD("%s schedule: need 0 <= min_lr <= lr (got min_lr %g, lr %g)", what, s->min_lr, s->lr);
    if (s->kind == NB_SCHEDULE_COSINE && s->total_steps < 1)
      BAD("cosine schedule: total_steps must be >= 1 (got %lld)", (long long)s->total_steps);
    if (s->kind == NB_SCHEDULE_WARMUP_COSINE &&
        !(s->warmup_steps >= 0 && s->total_steps > s->warmup_steps))
      BAD("warm-up cosine schedule: need 0 <= warmup_steps < total_steps (got %lld, %lld)",
          (long long)s->warmup_steps, (long long)s->total_steps);
    return 1;
  }
  case NB_SCHEDULE_ONE_CYCLE:
    if (s->total_steps < 1)
      BAD("one-cycle schedule: total_steps must be >= 1 (got %lld)", (long long)s->total_steps);
    if (!(s->pct_start >= 0 && s->pct_start <= 1))
      BAD("one-cycle schedule: pct_start must be in [0, 1] (got %g)", s->pct_start);
    if (!(s->div_factor > 0) || !(s->final_div_factor > 0) || !isfinite(s->div_factor) ||
        !isfinite(s->final_div_factor))
      BAD("one-cycle schedule: div_factor and final_div_factor must be finite and > 0 (got %g, "
          "%g)",
          s->div_factor, s->final_div_factor);
    return 1;
  }
  BAD("schedule: unknown kind %d", (int)s->kind);
#undef BAD
}

nb_status nb_schedule_check(const nb_schedule *s) {
  char msg[256];
  return valid(s, msg, sizeof msg) ? NB_OK : nb_error(NB_ERR_INVALID_ARG, "%s", msg);
}

/* torch's _annealing_cos / _annealing_linear, term for term so the values
 * round the same way. */
static double anneal(int linear, double start, double end, double pct) {
  if (linear) return (end - start) * pct + start;
  return end + (start - end) / 2.0 * (cos(PI * pct) + 1);
}

/* OneCycleLR.get_lr() at last_epoch = e (0-based). Phase ends are floats
 * (pct_start * total - 1), compared against the integer step as torch does. */
static double one_cycle(const nb_schedule *s, int64_t e) {
  double T = (double)s->total_steps;
  double initial = s->lr / s->div_factor, peak = s->lr, min = initial / s->final_div_factor;
  struct {
    double end, start_lr, end_lr;
  } ph[3];
  int n;
  if (s->three_phase) {
    ph[0].end = s->pct_start * T - 1, ph[0].start_lr = initial, ph[0].end_lr = peak;
    ph[1].end = 2 * s->pct_start * T - 2, ph[1].start_lr = peak, ph[1].end_lr = initial;
    ph[2].end = T - 1, ph[2].start_lr = initial, ph[2].end_lr = min;
    n = 3;
  } else {
    ph[0].end = s->pct_start * T - 1, ph[0].start_lr = initial, ph[0].end_lr = peak;
    ph[1].end = T - 1, ph[1].start_lr = peak, ph[1].end_lr = min;
    n = 2;
  }
  double x = (double)e, start = 0;
  for (int i = 0; i < n; i++) {
    if (x <= ph[i].end || i == n - 1) {
      double span = ph[i].end - start;
      /* torch divides by zero here (pct_start * total == 1, or total == 1);
       * a phase of zero length is taken as already finished */
      double pct = span != 0 ? (x - start) / span : 1.0;
      return anneal(s->anneal_linear, ph[i].start_lr, ph[i].end_lr, pct);
    }
    start = ph[i].end;
  }
  return min; /* not reached */
}

static double cosine(double lr, double min_lr, double k, double T) {
  return min_lr + (lr - min_lr) * (1 + cos(PI * k / T)) / 2;
}

double nb_schedule_lr(const nb_schedule *s, int64_t step) {
  if (!valid(s, NULL, 0)) return NAN;
  nb_schedule_kind kind = s->kind;
  if (step < 1) step = 1;
  int64_t e = step - 1; /* torch's last_epoch */
  switch (kind) {
  case NB_SCHEDULE_CONSTANT: return s->lr;
  case NB_SCHEDULE_STEP: return s->lr * pow(s->gamma, (double)(e / s->step_size));
  case NB_SCHEDULE_COSINE:
    if (e >= s->total_steps) return s->min_lr;
    return cosine(s->lr, s->min_lr, (double)e, (double)s->total_steps);
  case NB_SCHEDULE_WARMUP_COSINE: {
    int64_t W = s->warmup_steps, T = s->total_steps;
    if (step <= W) return s->lr * (double)step / (double)W;
    if (step >= T) return s->min_lr;
    return cosine(s->lr, s->min_lr, (double)(step - W), (double)(T - W));
  }
  case NB_SCHEDULE_ONE_CYCLE:
    if (e >= s->total_steps) e = s->total_steps - 1;
    return one_cycle(s, e);
  }
  return NAN;
}

char *nb_schedule_describe(const nb_schedule *s, char *buf, size_t cap) {
  if (!buf || cap == 0) return buf;
  if (!s) {
    snprintf(buf, cap, "(no schedule)");
    return buf;
  }
  switch (s->kind) {
  case NB_SCHEDULE_CONSTANT: snprintf(buf, cap, "constant lr %g", s->lr); break;
  case NB_SCHEDULE_STEP:
    snprintf(buf, cap, "step lr %g, x%g every %lld updates", s->lr, s->gamma,
             (long long)s->step_size);
    break;
  case NB_SCHEDULE_COSINE:
    snprintf(buf, cap, "cosine lr %g -> %g over %lld updates", s->lr, s->min_lr,
             (long long)s->total_steps);
    break;
  case NB_SCHEDULE_WARMUP_COSINE:
    snprintf(buf, cap, "warm-up %lld updates to lr %g, cosine -> %g at update %lld",
             (long long)s->warmup_steps, s->lr, s->min_lr, (long long)s->total_steps);
    break;
  case NB_SCHEDULE_ONE_CYCLE:
    snprintf(buf, cap,
             "one-cycle max_lr %g over %lld updates (pct_start %g, div_factor %g, "
             "final_div_factor %g%s%s)",
             s->lr, (long long)s->total_steps, s->pct_start, s->div_factor, s->final_div_factor,
             s->three_phase ? ", three-phase" : "", s->anneal_linear ? ", linear" : "");
    break;
  default: snprintf(buf, cap, "unknown schedule kind %d", (int)s->kind);
  }
  return buf;
}
