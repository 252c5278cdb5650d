/* The string escaping of the `--json` result lines (tools/nabla/json_str.c,
 * compiled into this test): each string, written into a JSON object and
 * parsed back with cJSON, gives the same bytes, quotes, backslashes,
 * newlines and other control characters included; bytes that are not UTF-8
 * become U+FFFD; the exact escaped text of a few strings. The command-line
 * lines themselves are checked by tests/cli_json.sh. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/nabla/json_str.h"
#include "test_util.h"

/* nabla_json_string(s) as text (malloc'ed). */
static char *escape(const char *s) {
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  assert_non_null(f);
  nabla_json_string(f, s);
  assert_int_equal(fclose(f), 0);
  return buf;
}

/* {"k": <escaped s>} parsed by cJSON: the value must be `want`. */
static void check_parses_to(const char *s, const char *want) {
  char *e = escape(s);
  size_t n = strlen(e) + 16;
  char *line = malloc(n);
  snprintf(line, n, "{\"k\": %s}", e);
  cJSON *j = cJSON_Parse(line);
  if (!j) fail_msg("not JSON: %s", line);
  const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "k");
  assert_true(cJSON_IsString(k));
  if (strcmp(k->valuestring, want)) fail_msg("'%s' parsed back as '%s'", want, k->valuestring);
  cJSON_Delete(j);
  free(line);
  free(e);
}

static void test_round_trip(void **state) {
  (void)state;
  static const char *const strs[] = {
      "",
      "runs/mnist/weights.safetensors",
      "a\"b",
      "back\\slash\\",
      "new\nline",
      "\"\\\n\r\t\b\f",
      "\x01\x02\x1f\x7f end",
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", /* é, €, an emoji: kept as they are */
      "/tmp/run \"x\"\\\n/weights.safetensors",
  };
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) check_parses_to(strs[i], strs[i]);
}

static void test_exact_text(void **state) {
  (void)state;
  static const char *const cases[][2] = {
      {"plain", "\"plain\""},
      {"a\"b\\c\nd", "\"a\\\"b\\\\c\\nd\""}, /* quote, backslash, newline */
      {"\t\r\b\f", "\"\\t\\r\\b\\f\""},
      {"\x01\x1f", "\"\\u0001\\u001f\""},
      {"\x7f/", "\"\x7f/\""}, /* DEL and '/' need no escape */
      {"\xc3\xa9", "\"\xc3\xa9\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *e = escape(cases[i][0]);
    assert_string_equal(e, cases[i][1]);
    free(e);
  }
  char *e = escape(NULL);
  assert_string_equal(e, "null");
  free(e);
}

/* Each byte outside a well-formed UTF-8 sequence is one U+FFFD (EF BF BD
 * in the parsed value); the valid characters around it are kept. */
static void test_invalid_utf8(void **state) {
  (void)state;
  static const char *const cases[][2] = {
      {"a\xff-", "a\xef\xbf\xbd-"},                             /* never valid */
      {"\xc3", "\xef\xbf\xbd"},                                 /* truncated at the end */
      {"\xc3(", "\xef\xbf\xbd("},                               /* bad continuation */
      {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong '/' */
      {"\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* overlong 3-byte */
      {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* a surrogate */
      {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
      {"\x80x\xc3\xa9", "\xef\xbf\xbdx\xc3\xa9"}, /* lone continuation, then é */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_parses_to(cases[i][0], cases[i][1]);
  char *e = escape("\xff");
  assert_string_equal(e, "\"\\ufffd\"");
  free(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_exact_text),
      cmocka_unit_test(test_invalid_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
