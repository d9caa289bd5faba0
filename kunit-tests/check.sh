#!/usr/bin/env bash
# Check a KUnit console log: kunit.py parse (summary and JSON), then an
# independent look at the JSON. Fails on a failing or crashed test, on a
# log without results, and on a missing suite of kunit-tests/expected-suites
# (unless GLOB filters it out), and on a kernel bug report in the log (an
# oops, BUG, KASAN, UBSAN or lockdep report: a test that passes while the
# kernel reports a bug has not passed). KUNIT_EXPECTED names another list.
#
# usage: kunit-tests/check.sh CONSOLE_LOG JSON_OUT [GLOB]
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
logf=${1:?usage: $0 LOG JSON [GLOB]}
json=${2:?usage: $0 LOG JSON [GLOB]}
glob=${3:-}
rm -f "$json"
prc=0
(cd "$KSRC" && python3 tools/testing/kunit/kunit.py parse --json="$json" "$logf") || prc=$?
[ -s "$json" ] || die "kunit.py parse produced no results from $logf"
python3 "$REPO/kunit-tests/check_results.py" "$json" \
	"${KUNIT_EXPECTED:-$REPO/kunit-tests/expected-suites}" "$glob"
[ "$prc" -eq 0 ] || die "kunit.py parse reported a failure"
bash "$REPO/kunit-tests/kernel-bugs.sh" "$logf"
