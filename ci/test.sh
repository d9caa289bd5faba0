#!/usr/bin/env bash
# The fork's whole test suite, on a fresh machine or an incremental one:
# toolchain, host tests, the patch series, then per architecture the
# kernel build, KUnit and the VM tests. Installs what it needs.
#
# usage: ci/test.sh [--arch x86_64|ppc64le]...   (default: both)
#
# Every stage runs even when an earlier one failed, except those that need
# a kernel whose build failed. A table of stage timings ends the output,
# then one summary line; the exit status is non-zero if any stage failed.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

arches=()
while [ $# -gt 0 ]; do
	case $1 in
	--arch) arches+=("$2") && shift 2 ;;
	*) die "usage: $0 [--arch x86_64|ppc64le]..." ;;
	esac
done
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 ppc64le)

stages_begin stages

stage bootstrap bash "$REPO/ci/bootstrap.sh" || exit 1
stage host:assemble python3 "$REPO/linux/test_assemble.py" -q
stage host:scripts bash "$REPO/ci/lint-scripts.sh"
stage host:vm-runner bash "$REPO/vm/test_boot_check.sh"
if [ -f "$REPO/ci/host-tests.sh" ]; then
	stage host:rust-blksnap bash "$REPO/ci/host-tests.sh"
fi
stage series:checkpatch bash "$REPO/ci/series.sh"
# The checker runs kunit.py from the assembled tree (made by the stage above).
stage host:kunit-checker python3 "$REPO/kunit-tests/test_checker.py" -q

PPC64LE_CI_TESTS=(identity-ppc64le cbt-devices cli-cbt-only cli-cbt snapshot-images snapshot-subpage)

for arch in "${arches[@]}"; do
	if stage "build:$arch" bash "$REPO/ci/build.sh" "$arch"; then
		stage "kunit:$arch" bash "$REPO/ci/kunit.sh" "$arch"
		stage "kunit:$arch:warn" bash "$REPO/ci/kunit-warn-check.sh" "$arch"
		if [ "$arch" = x86_64 ]; then
			stage "vm:selftest" bash "$REPO/ci/vm-tests.sh" selftest
		fi
		if [ "$arch" = x86_64 ]; then
			stage "vm:$arch" bash "$REPO/ci/vm-tests.sh" "$arch" --except 'xfstests-*'
			stage "vm:$arch:xfstests" bash "$REPO/ci/vm-tests.sh" "$arch" \
				xfstests-cbt xfstests-snapshot
			stage "bench:smoke" bash "$REPO/ci/bench.sh" smoke
		else
			# TCG emulating POWER9 is several times slower than x86_64:
			# the run covers the CBT tests, the tool's CBT-only and backup
			# tests and snapshots on tmpfs and file storage; every test
			# runs there on demand (bash ci/vm-tests.sh ppc64le).
			stage "vm:$arch" bash "$REPO/ci/vm-tests.sh" "$arch" "${PPC64LE_CI_TESTS[@]}"
		fi
	fi
done

stages_end
