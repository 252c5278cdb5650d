/* Thread-local error messages behind nb_status codes. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "nabla/tensor.h"

static _Thread_local char last_error[1024];

const char *nb_status_name(nb_status st) {
  switch (st) {
  case NB_OK: return "ok";
  case NB_ERR_INVALID_ARG: return "invalid argument";
  case NB_ERR_SHAPE: return "shape error";
  case NB_ERR_DTYPE: return "dtype error";
  case NB_ERR_OOM: return "out of memory";
  case NB_ERR_IO: return "I/O error";
  case NB_ERR_FORMAT: return "format error";
  case NB_ERR_UNSUPPORTED: return "unsupported";
  case NB_ERR_STATE: return "wrong state";
  case NB_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char *nb_last_error(void) { return last_error; }

void nb_clear_error(void) { last_error[0] = '\0'; }

nb_status nb_error(nb_status st, const char *fmt, ...) {
  /* format into a copy: callers often pass nb_last_error() as an argument */
  char buf[sizeof last_error];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  memcpy(last_error, buf, sizeof buf);
  return st;
}
