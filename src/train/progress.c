/* Progress display for a training or evaluation pass: a bar redrawn in
 * place on a terminal, plain periodic lines in a log file. Time comes from a
 * replaceable clock so the output is a pure function of the updates (the
 * tests render it with a fake clock and compare text). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nabla/train.h"

#define MAX_METRICS 16
#define MAX_NAME    64
/* Rate samples closer than this are merged (a single fast step says little
 * about throughput), and the bar is redrawn no more often than this. */
#define MIN_INTERVAL 0.1
/* Weight of the newest sample in the moving average of the rate (tqdm's). */
#define SMOOTHING 0.3

struct nb_progress {
  FILE *f;
  char *label;
  int64_t total;
  nb_progress_mode mode;
  char unit[32];
  double per_step;
  double log_pct, log_seconds;
  int width;
  nb_clock_fn clock;
  void *clock_ctx;

  double t0;
  double sample_t; /* last rate sample */
  int64_t sample_done;
  double rate; /* items/s, valid when have_rate */
  int have_rate;
  double draw_t; /* last bar redraw */
  int drawn;
  size_t last_len; /* length of the bar line on screen, to blank leftovers */
  double log_t;    /* last log line */
  int64_t log_done;

  int64_t done;
  int n_metrics;
  char names[MAX_METRICS][MAX_NAME];
  double values[MAX_METRICS];
  int ended;

  char *line; /* the line being composed */
  size_t len, cap;
  int oom;
};

static double monotonic(void *ctx) {
  (void)ctx;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now(const nb_progress *p) { return p->clock(p->clock_ctx); }

nb_status nb_progress_new(FILE *f, const char *label, int64_t total, nb_progress_mode mode,
                          nb_progress **out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_progress_new: NULL out");
  *out = NULL;
  if (!f && mode != NB_PROGRESS_OFF)
    return nb_error(NB_ERR_INVALID_ARG, "nb_progress_new: NULL file");
  if (mode < NB_PROGRESS_AUTO || mode > NB_PROGRESS_OFF)
    return nb_error(NB_ERR_INVALID_ARG, "nb_progress_new: unknown mode %d", (int)mode);
  nb_progress *p = calloc(1, sizeof *p);
  if (!p) return nb_error(NB_ERR_OOM, "nb_progress_new: out of memory");
  p->label = strdup(label ? label : "");
  p->cap = 256;
  p->line = malloc(p->cap);
  if (!p->label || !p->line) {
    free(p->label);
    free(p->line);
    free(p);
    return nb_error(NB_ERR_OOM, "nb_progress_new: out of memory");
  }
  if (mode == NB_PROGRESS_AUTO) {
    int fd = fileno(f);
    mode = fd >= 0 && isatty(fd) ? NB_PROGRESS_BAR : NB_PROGRESS_LOG;
  }
  p->f = f;
  p->total = total > 0 ? total : 0;
  p->mode = mode;
  snprintf(p->unit, sizeof p->unit, "it");
  p->per_step = 1;
  p->log_pct = 10;
  p->log_seconds = 10;
  p->width = 30;
  p->clock = monotonic;
  p->t0 = p->sample_t = p->log_t = monotonic(NULL);
  *out = p;
  return NB_OK;
}

nb_progress_mode nb_progress_get_mode(const nb_progress *p) {
  return p ? p->mode : NB_PROGRESS_OFF;
}

nb_status nb_progress_set_unit(nb_progress *p, const char *unit, double per_step) {
  if (!p || !unit || !(per_step > 0) || !isfinite(per_step) || strlen(unit) >= sizeof p->unit)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_progress_set_unit: need a unit of at most %d bytes and per_step > 0",
                    (int)sizeof p->unit - 1);
  snprintf(p->unit, sizeof p->unit, "%s", unit);
  p->per_step = per_step;
  return NB_OK;
}

nb_status nb_progress_set_log_interval(nb_progress *p, double pct, double seconds) {
  if (!p || !(pct >= 0 && pct <= 100) || !(seconds >= 0) || !isfinite(seconds))
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_progress_set_log_interval: need 0 <= pct <= 100 and seconds >= 0");
  p->log_pct = pct;
  p->log_seconds = seconds;
  return NB_OK;
}

nb_status nb_progress_set_width(nb_progress *p, int width) {
  if (!p || width < 1 || width > 200)
    return nb_error(NB_ERR_INVALID_ARG, "nb_progress_set_width: width must be in [1, 200]");
  p->width = width;
  return NB_OK;
}

nb_status nb_progress_set_clock(nb_progress *p, nb_clock_fn clock, void *ctx) {
  if (!p || !clock) return nb_error(NB_ERR_INVALID_ARG, "nb_progress_set_clock: NULL argument");
  p->clock = clock;
  p->clock_ctx = ctx;
  p->t0 = p->sample_t = p->log_t = now(p);
  return NB_OK;
}

/* ---- composing a line ------------------------------------------------------ */

static void add(nb_progress *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void add(nb_progress *p, const char *fmt, ...) {
  if (p->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->line + p->len, p->cap - p->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (p->len + (size_t)n < p->cap) {
      p->len += (size_t)n;
      return;
    }
    size_t cap = 2 * (p->len + (size_t)n + 1);
    char *line = realloc(p->line, cap);
    if (!line) {
      p->oom = 1;
      return;
    }
    p->line = line;
    p->cap = cap;
  }
}

/* "1834" / "18.3" / "1.83": three significant figures or more. */
static void add_rate(nb_progress *p, int known, double rate) {
  if (!known || !isfinite(rate))
    add(p, "-- %s/s", p->unit);
  else
    add(p, "%.*f %s/s", rate >= 100 ? 0 : rate >= 10 ? 1 : 2, rate, p->unit);
}

/* M:SS, or H:MM:SS from an hour on. */
static void add_duration(nb_progress *p, double seconds) {
  if (!(seconds >= 0) || seconds > 1e9) {
    add(p, "-:--");
    return;
  }
  long long s = (long long)(seconds + 0.5);
  if (s >= 3600)
    add(p, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else
    add(p, "%lld:%02lld", s / 60, s % 60);
}

/* The whole line; `final` shows elapsed time and mean rate instead of the
 * ETA and the smoothed rate. */
static void compose(nb_progress *p, double t, int final) {
  p->len = 0;
  p->oom = 0;
  int bar = p->mode == NB_PROGRESS_BAR;
  const char *sep = bar ? " " : "  ";
  if (p->label[0]) add(p, "%s%s", p->label, sep);
  if (p->total > 0) {
    char digits[24];
    int tw = snprintf(digits, sizeof digits, "%lld", (long long)p->total);
    if (bar) {
      int filled = (int)((int64_t)p->width * p->done / p->total);
      add(p, "[");
      for (int i = 0; i < p->width; i++)
        add(p, "%c", p->done >= p->total || i < filled ? '=' : i == filled ? '>' : ' ');
      add(p, "] %*lld/%lld", tw, (long long)p->done, (long long)p->total);
    } else {
      add(p, "%*lld/%lld (%d%%)", tw, (long long)p->done, (long long)p->total,
          (int)(100 * p->done / p->total));
    }
  } else {
    add(p, "%lld", (long long)p->done);
  }
  add(p, "  ");
  if (final) {
    double elapsed = t - p->t0;
    add_rate(p, elapsed > 0, (double)p->done * p->per_step / elapsed);
    add(p, "  time ");
    add_duration(p, elapsed);
  } else {
    add_rate(p, p->have_rate, p->rate);
    if (p->total > 0) {
      add(p, "  ETA ");
      if (p->have_rate && p->rate > 0)
        add_duration(p, (double)(p->total - p->done) * p->per_step / p->rate);
      else
        add_duration(p, -1);
    }
  }
  for (int i = 0; i < p->n_metrics; i++) add(p, "  %s %.4f", p->names[i], p->values[i]);
}

/* Writes the composed line over the previous one. */
static void draw(nb_progress *p) {
  fputc('\r', p->f);
  fwrite(p->line, 1, p->len, p->f);
  for (size_t i = p->len; i < p->last_len; i++) fputc(' ', p->f);
  p->last_len = p->len;
}

static nb_status finish_write(nb_progress *p, const char *fn) {
  if (p->oom) return nb_error(NB_ERR_OOM, "%s: out of memory", fn);
  fflush(p->f);
  if (ferror(p->f)) return nb_error(NB_ERR_IO, "%s: write error", fn);
  return NB_OK;
}

/* ---- updates --------------------------------------------------------------- */

nb_status nb_progress_update(nb_progress *p, int64_t done, int n_metrics, const char *const *names,
                             const double *values) {
  const char *fn = "nb_progress_update";
  if (!p) return nb_error(NB_ERR_INVALID_ARG, "%s: NULL progress", fn);
  if (p->ended) return nb_error(NB_ERR_STATE, "%s: called after nb_progress_end", fn);
  if (done < p->done || (p->total > 0 && done > p->total))
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: done = %lld must not be below the previous %lld nor above total %lld", fn,
                    (long long)done, (long long)p->done, (long long)p->total);
  if (n_metrics < 0 || n_metrics > MAX_METRICS || (n_metrics > 0 && (!names || !values)))
    return nb_error(NB_ERR_INVALID_ARG, "%s: need 0 <= n_metrics <= %d with names and values", fn,
                    MAX_METRICS);
  for (int i = 0; i < n_metrics; i++)
    if (!names[i] || strlen(names[i]) >= MAX_NAME)
      return nb_error(NB_ERR_INVALID_ARG, "%s: metric %d needs a name of at most %d bytes", fn, i,
                      MAX_NAME - 1);
  p->done = done;
  p->n_metrics = n_metrics;
  for (int i = 0; i < n_metrics; i++) {
    if (strcmp(p->names[i], names[i])) snprintf(p->names[i], MAX_NAME, "%s", names[i]);
    p->values[i] = values[i];
  }
  if (p->mode == NB_PROGRESS_OFF) return NB_OK;

  double t = now(p);
  if (t - p->sample_t >= MIN_INTERVAL) {
    double inst = (double)(done - p->sample_done) * p->per_step / (t - p->sample_t);
    p->rate = p->have_rate ? SMOOTHING * inst + (1 - SMOOTHING) * p->rate : inst;
    p->have_rate = 1;
    p->sample_t = t;
    p->sample_done = done;
  }
  int complete = p->total > 0 && done >= p->total;
  if (p->mode == NB_PROGRESS_BAR) {
    if (p->drawn && t - p->draw_t < MIN_INTERVAL && !complete) return NB_OK;
    compose(p, t, 0);
    if (!p->oom) draw(p);
    p->drawn = 1;
    p->draw_t = t;
    return finish_write(p, fn);
  }
  /* LOG: the end line reports completion, so no line for it here */
  if (complete) return NB_OK;
  int due = p->log_seconds > 0 && t - p->log_t >= p->log_seconds;
  if (p->log_pct > 0 && p->total > 0) {
    double step = (double)p->total * p->log_pct / 100.0;
    if (floor((double)done / step) > floor((double)p->log_done / step)) due = 1;
  }
  if (!due) return NB_OK;
  compose(p, t, 0);
  if (!p->oom) {
    fwrite(p->line, 1, p->len, p->f);
    fputc('\n', p->f);
  }
  p->log_t = t;
  p->log_done = done;
  return finish_write(p, fn);
}

nb_status nb_progress_end(nb_progress *p) {
  const char *fn = "nb_progress_end";
  if (!p) return nb_error(NB_ERR_INVALID_ARG, "%s: NULL progress", fn);
  if (p->ended) return nb_error(NB_ERR_STATE, "%s: called twice", fn);
  p->ended = 1;
  if (p->mode == NB_PROGRESS_OFF) return NB_OK;
  compose(p, now(p), 1);
  if (!p->oom) {
    if (p->mode == NB_PROGRESS_BAR)
      draw(p);
    else
      fwrite(p->line, 1, p->len, p->f);
    fputc('\n', p->f);
  }
  return finish_write(p, fn);
}

void nb_progress_free(nb_progress *p) {
  if (!p) return;
  free(p->label);
  free(p->line);
  free(p);
}
