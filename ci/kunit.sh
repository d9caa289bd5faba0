#!/usr/bin/env bash
# Run the KUnit suites built into the fork's kernel and check the results
# with tools/testing/kunit/kunit.py (exec/parse on the kernel that
# ci/build.sh built: no separate KUnit build).
#
# The kernel is booted directly under QEMU with kunit_shutdown=reboot, its
# console is kept, and `kunit.py parse` turns it into a summary and JSON.
# Fails on any failing or crashed test, on a run with no results, and when a
# suite named in kunit-tests/expected-suites is missing.
#
# usage: ci/kunit.sh ARCH [GLOB]    (GLOB: kunit.filter_glob, default all)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

arch=${1:?usage: $0 x86_64|ppc64le [glob]}
glob=${2:-}
outdir=$BLKSNAP_CACHE/results/kunit-$arch$FLAVOUR_SUFFIX
mkdir -p "$outdir"
log=$outdir/console.log
json=$outdir/results.json
rm -f "$log" "$json"

args="kunit.enable=1 kunit_shutdown=reboot"
[ -z "$glob" ] || args="$args kunit.filter_glob=$glob"
rc=0
bash "$REPO/vm/qemu.sh" "$arch" --timeout "${KUNIT_TIMEOUT:-900}" --log "$log" \
	--append "$args" || rc=$?
if [ "$rc" -eq 124 ]; then
	tail -n 30 "$log" >&2
	die "KUnit ($arch): the guest timed out (console: $log)"
fi

bash "$REPO/kunit-tests/check.sh" "$log" "$json" "$glob" ||
	die "KUnit ($arch): FAILED (console: $log)"
log "KUnit ($arch): all passed (console: $log, json: $json)"
