#!/usr/bin/env bash
# Check that warnings reach the log and fail a run, on the kernel that
# ci/build.sh built: boots the KUnit suite rust_kernel_warn alone with
# rust_kernel_warn.trigger=1, so that it warns on purpose once from Rust
# (warn_on!) and once from C (WARN_ON), and expects the KUnit check to fail
# on the kernel bug reports, with both reports in the log. On an
# architecture where warnings compile to nothing (CONFIG_BUG off) this
# stage fails.
#
# usage: ci/kunit-warn-check.sh ARCH
set -euo pipefail
. "$(dirname "$0")/lib.sh"

arch=${1:?usage: $0 x86_64|ppc64le}
outdir=$BLKSNAP_CACHE/results/kunit-warn-$arch$FLAVOUR_SUFFIX
mkdir -p "$outdir"
log=$outdir/console.log
rm -f "$log"
rc=0
bash "$REPO/vm/qemu.sh" "$arch" --timeout "${KUNIT_TIMEOUT:-900}" --log "$log" \
	--append "kunit.enable=1 kunit_shutdown=reboot kunit.filter_glob=rust_kernel_warn rust_kernel_warn.trigger=1" ||
	rc=$?
[ "$rc" -ne 124 ] || die "warn check ($arch): the guest timed out (console: $log)"

out=$(bash "$REPO/kunit-tests/check.sh" "$log" "$outdir/results.json" rust_kernel_warn 2>&1) &&
	die "warn check ($arch): a run with two warnings passed the KUnit check (console: $log)"
grep -q "reported a bug" <<<"$out" ||
	die "warn check ($arch): the check failed, but not on the warnings: $out"
n=$(grep -cE '^\[ *[0-9]+\.[0-9]+\] WARNING: ' "$log" || true)
[ "$n" -ge 2 ] || die "warn check ($arch): $n warning(s) in the log, expected 2 (console: $log)"
grep -q "ok 1 warn_on_returns_its_condition" "$log" ||
	die "warn check ($arch): the suite did not run to its end (console: $log)"
log "warn check ($arch): $n warnings reported, and the check fails on them (console: $log)"
