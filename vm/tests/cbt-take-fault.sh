#!/usr/bin/env bash
# Guest-side test: a take does not wait for a cbtmap read whose copy to user
# space is blocked in a page fault (vm/tests/lib/cbtmap-fault.c, with a
# userfaultfd buffer). A real fault there can wait for a file system the
# take froze: the take, waiting for the read, would never thaw it.
# vm: --disk 64M --timeout 300
# vm-requires: CONFIG_BLKSNAP CONFIG_USERFAULTFD
# vm-arch: x86_64 (the guest compiles the helper with the host's compiler)
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
here=$(cd "$(dirname "$0")" && pwd)
DISK=${1:-${SCRATCH_DISKS%% *}}
[ -b "$DISK" ] || fail "no scratch disk"
need_tool
work=$(mktemp -d /tmp/cbtfault.XXXXXX)
cleanup() {
	"$BIN" detach "$DISK" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
cc -O2 -Wall -Werror -pthread -I"$here/../../linux/tree/include/uapi" -o "$work/cbtmap-fault" \
	"$here/lib/cbtmap-fault.c"
"$BIN" detach "$DISK" >/dev/null 2>&1 || true
bs attach "$DISK" >/dev/null
dd if=/dev/urandom of="$DISK" bs=1M count=4 oflag=direct status=none
rc=0
"$work/cbtmap-fault" "$DISK" /tmp || rc=$?
[ "$rc" -eq 0 ] || fail "cbtmap-fault exited $rc"
echo "cbt-take-fault: all checks passed"
