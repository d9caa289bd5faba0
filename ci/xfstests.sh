#!/usr/bin/env bash
# xfstests on demand, in a guest of the built x86_64 kernel (.ci/run runs
# only the CI list, as vm/tests/xfstests-cbt.sh and xfstests-snapshot.sh).
#
# usage: ci/xfstests.sh [--mode cbt|snapshot|plain] [--fs ext4|xfs]
#                       [--timeout SEC] [--list ci|long] [TEST...|-g GROUP]
#   --mode   cbt (default): change tracker attached to both disks;
#            snapshot: TEST_DEV is a snapshot image of a live origin and
#            SCRATCH_DEV is snapshotted while the tests run;
#            plain: no filter, for comparison
#   --fs     file system (default ext4)
#   --list   ci (default, about 5 minutes) or long (about 45 minutes);
#            instead, test names or check options go to xfstests' check
# Prints the guest's "N passed, N failed, N not run" line and the xunit
# report's path; exits non-zero if a test failed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

mode=cbt fs=ext4 timeout="" list=""
while [ $# -gt 0 ]; do
	case $1 in
	--mode) mode=$2 && shift 2 ;;
	--fs) fs=$2 && shift 2 ;;
	--timeout) timeout=$2 && shift 2 ;;
	--list) list=$2 && shift 2 ;;
	-h | --help) sed -n '2,15s/^# \{0,1\}//p' "$0" && exit 0 ;;
	*) break ;;
	esac
done
if [ -n "$list" ]; then
	[ -f "$REPO/vm/xfstests/$list.list" ] || die "no list vm/xfstests/$list.list"
	[ $# -eq 0 ] || die "give either --list or tests, not both"
	set -- "$list"
fi
[ $# -gt 0 ] || set -- ci
case $mode in
cbt | plain) disks=(--disk 1G --disk 1G) ;;
snapshot) disks=(--disk 1G --disk 1G --disk 3G) ;;
*) die "unknown mode '$mode' (cbt, snapshot or plain)" ;;
esac
if [ -z "$timeout" ]; then
	timeout=1500
	[ "$*" = ci ] || timeout=7200
fi

bash "$REPO/ci/bootstrap.sh" >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BLKSNAP_CACHE/cargo-target}
cargo build -q --locked --manifest-path "$REPO/rust-blksnap/Cargo.toml" --bin blksnap ||
	die "cannot build the blksnap tool"
export BLKSNAP_BIN=$CARGO_TARGET_DIR/debug/blksnap
out=$BLKSNAP_CACHE/results/xfstests-$mode-$fs
rm -rf "$out"
mkdir -p "$out"
rc=0
VM_QUIET=1 bash "$REPO/vm/run.sh" "${disks[@]}" --timeout "$timeout" --out "$out" \
	--log "$out/console.log" "$REPO/vm/xfstests/guest.sh" "$mode" "$fs" "$@" || rc=$?
grep -aE '^(xfstests \(|Not run:|Failures:|snapshots of|FAIL|PASS)' "$out/console.log" || true
echo "xunit report: $out/xfstests/result.xml; console: $out/console.log"
exit "$rc"
