/* Strings in the one-line JSON results of `--json` (nabla train, nabla
 * eval): file paths are whatever the user named, so they are escaped, not
 * pasted between quotes. */
#ifndef NABLA_JSON_STR_H
#define NABLA_JSON_STR_H

#include <stdio.h>

/* Writes s to f as a JSON string, quotes included: '"', '\\' and control
 * characters are escaped, and each byte that is not part of a valid UTF-8
 * sequence becomes U+FFFD (JSON text is UTF-8), so the line parses
 * whatever s holds. A NULL s is written as null. */
void nabla_json_string(FILE *f, const char *s);

#endif
