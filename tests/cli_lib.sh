# Sourced by the tests/cli_*.sh scripts: a scratch folder $tmp (removed on
# exit), pass/fail counters, `check` and `expect_error`, and `finish`.

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() {
  fail=$((fail + 1))
  echo "FAIL: $*"
}

# check DESCRIPTION COMMAND...: the command must succeed.
check() {
  local what=$1
  shift
  if "$@"; then ok; else bad "$what"; fi
}

# expect_error DESCRIPTION PATTERN COMMAND...: the command must fail with an
# exit status (not a signal: no crash) and print exactly one line on
# stderr, which matches PATTERN (a grep basic regular expression).
expect_error() {
  local what=$1 pattern=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines
  lines=$(grep -c . "$tmp/err")
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$lines" -eq 1 ] && grep -q -- "$pattern" "$tmp/err"; then
    ok
  else
    bad "$what (exit $rc, $lines stderr lines, want /$pattern/):"
    sed 's/^/    /' "$tmp/err" | head -5
  fi
}

# Prints the closing count line and exits with the verdict.
finish() {
  echo "$pass passed, $fail failed"
  exit $((fail > 0))
}
