#!/usr/bin/env bash
# The fork's whole test suite, on a fresh machine or an incremental one:
# toolchain, host tests, the patch series, then per architecture the
# kernel build, KUnit and the VM tests. Installs what it needs.
#
# usage: ci/test.sh [--arch x86_64|ppc64le]...   (default: both)
#
# The first architecture's kernel is built and its KUnit run first. The
# other architectures' chains (build, KUnit, VM tests) then run in the
# background while the first one's VM tests run, their output prefixed
# with the architecture's name: a TCG guest keeps about one core busy, so
# on two cores the second kernel build fits beside it. Kernel builds stay
# one at a time (the kbuild lock of ci/lib.sh).
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

PPC64LE_CI_TESTS=(identity-ppc64le cbt-devices cli-cbt-only cli-cbt snapshot-images snapshot-subpage
	snapshot-drain snapshot-image-cbt snapshot-zoned snapshot-nowait)

# kernel_stages ARCH: build, KUnit and its warning check; fails if the
# kernel could not be built (the stages that need it are left out).
kernel_stages() {
	local arch=$1
	stage "build:$arch" bash "$REPO/ci/build.sh" "$arch" || return 1
	stage "kunit:$arch" bash "$REPO/ci/kunit.sh" "$arch"
	stage "kunit:$arch:warn" bash "$REPO/ci/kunit-warn-check.sh" "$arch"
	return 0
}

vm_stages() {
	local arch=$1
	if [ "$arch" = x86_64 ]; then
		stage "vm:selftest" bash "$REPO/ci/vm-tests.sh" selftest
		stage "vm:$arch" bash "$REPO/ci/vm-tests.sh" "$arch" --except 'xfstests-*'
		stage "vm:$arch:xfstests" bash "$REPO/ci/vm-tests.sh" "$arch" \
			xfstests-cbt xfstests-snapshot
		stage "bench:smoke" bash "$REPO/ci/bench.sh" smoke
	else
		# TCG emulating POWER9 is several times slower than x86_64:
		# the run covers the CBT tests, the tool's CBT-only and backup
		# tests, snapshots on every storage kind and the sub-page
		# cases, the drain at the take, image writes in change tracking,
		# zoned devices refused and NOWAIT writes; every test runs there on demand
		# (bash ci/vm-tests.sh ppc64le).
		stage "vm:$arch" bash "$REPO/ci/vm-tests.sh" "$arch" "${PPC64LE_CI_TESTS[@]}"
	fi
}

first=${arches[0]}
first_built=0
kernel_stages "$first" && first_built=1

# The other architectures, in the background. A chain that ends without
# recording a failed stage although it failed (killed, say) still fails
# the run: the chain writes a file as it ends, checked below.
bg=()
for arch in "${arches[@]:1}"; do
	status=$BLKSNAP_CACHE/results/chain-$arch.status
	rm -f "$status"
	log "stages of $arch run in the background (lines prefixed [$arch])"
	(
		# Below the first architecture's guests, whose timeouts and
		# timings matter more than this chain's start.
		renice -n 5 -p "$BASHPID" >/dev/null
		# Failed stages are in the table; this only says the chain ended.
		kernel_stages "$arch" && vm_stages "$arch"
		echo ended >"$status"
	) 2>&1 | sed -u "s/^/[$arch] /" &
	bg+=("$arch:$!")
done

[ "$first_built" -eq 0 ] || vm_stages "$first"

for b in "${bg[@]}"; do
	arch=${b%%:*}
	wait "${b#*:}"
	status=$BLKSNAP_CACHE/results/chain-$arch.status
	if [ ! -s "$status" ]; then
		printf '%s\t%s\t%s\n' "chain:$arch" 0 "FAILED(ended without a status)" >>"$STAGE_FILE"
	fi
done

stages_end
