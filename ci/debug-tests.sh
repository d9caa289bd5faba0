#!/usr/bin/env bash
# The debug flavour of the fork: the x86_64 kernel with KASAN, lockdep and
# the atomic-sleep checks on (configs/debug.config), its KUnit suites and
# the VM tests. A bug report of the kernel (oops, KASAN, lockdep, sleeping
# in atomic context, ...) in any log fails the run (kunit-tests/kernel-bugs.sh),
# even when the test itself passed. Guest timeouts are tripled: KASAN slows
# the guest down.
#
# Not part of ci/test.sh: the debug kernel is a build of its own, which
# would add its cold build time to every CI run. Run it when the I/O path,
# locking or lifetimes change.
#
# usage: ci/debug-tests.sh [VM_TEST_NAME...]
set -uo pipefail
export BLKSNAP_FLAVOUR=debug
. "$(dirname "$0")/lib.sh"

stages_begin stages-debug

stage bootstrap bash "$REPO/ci/bootstrap.sh" || exit 1
if stage build:x86_64-debug bash "$REPO/ci/build.sh" x86_64; then
	KUNIT_TIMEOUT=1800 stage kunit:x86_64-debug bash "$REPO/ci/kunit.sh" x86_64
	stage vm:x86_64-debug bash "$REPO/ci/vm-tests.sh" x86_64 "$@"
fi

stages_end
