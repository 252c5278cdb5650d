/* JSON string escaping for the `--json` result lines (RFC 8259). */
#include "json_str.h"

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0 if s[0] starts none.
 * Stops at the NUL terminator, which is never a continuation byte. */
static int utf8_len(const unsigned char *s) {
  unsigned c = s[0], lo = 0x80, hi = 0xbf;
  int n;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0; /* overlong below U+0800 */
    if (c == 0xed) hi = 0x9f; /* surrogates U+D800..U+DFFF */
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90; /* overlong below U+10000 */
    if (c == 0xf4) hi = 0x8f; /* above U+10FFFF */
  } else {
    return 0;
  }
  for (int i = 1; i < n; i++) {
    if (s[i] < lo || s[i] > hi) return 0;
    lo = 0x80;
    hi = 0xbf;
  }
  return n;
}

void nabla_json_string(FILE *f, const char *s) {
  if (!s) {
    fputs("null", f);
    return;
  }
  const unsigned char *p = (const unsigned char *)s;
  putc('"', f);
  while (*p) {
    unsigned c = *p;
    int n = utf8_len(p);
    if (!n) {
      fputs("\\ufffd", f);
      p++;
      continue;
    }
    if (n > 1) {
      fwrite(p, 1, (size_t)n, f);
      p += n;
      continue;
    }
    p++;
    switch (c) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    case '\b': fputs("\\b", f); break;
    case '\f': fputs("\\f", f); break;
    default:
      if (c < 0x20)
        fprintf(f, "\\u%04x", c);
      else
        putc((int)c, f);
    }
  }
  putc('"', f);
}
