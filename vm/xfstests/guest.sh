#!/usr/bin/env bash
# Guest side of the xfstests runs: sets up TEST_DEV and SCRATCH_DEV on
# scratch disks, runs xfstests' `check` with xunit results, copies results
# and logs to $VM_OUT/xfstests, prints "N passed, N failed, N not run" and
# exits non-zero if a test failed or none passed.
#
# usage (as root, in a guest running the fork; disks from $SCRATCH_DISKS):
#   vm/xfstests/guest.sh MODE FSTYP LIST|TEST...
# MODE:
#   cbt       the change tracker is attached to both disks before mkfs
#             (disks: TEST, SCRATCH);
#   snapshot  TEST_DEV is the writable image of a snapshot of an origin
#             whose file system stays mounted and keeps receiving writes;
#             SCRATCH_DEV is tracked and snapshotted every 20 s while the
#             tests run (each snapshot is taken, its image read, checked
#             for errors and destroyed); the difference storage is a file
#             system on a third disk (disks: ORIGIN, SCRATCH, STORE);
#   plain     no filter (disks: TEST, SCRATCH), for comparison.
# FSTYP: ext4 or xfs. LIST: "ci" or "long" (vm/xfstests/LIST.list), else
# test names (generic/002 ...) or xfstests options (-g quick).
set -euo pipefail

. "$(dirname "$0")/../tests/lib/cbt.sh"
MODE=${1:?usage: $0 cbt|snapshot|plain ext4|xfs LIST|TEST...}
FSTYP=${2:?usage: $0 MODE ext4|xfs LIST|TEST...}
shift 2
[ $# -gt 0 ] || set -- ci
here=$(cd "$(dirname "$0")" && pwd)
tests=()
if [ $# -eq 1 ] && [ -f "$here/$1.list" ]; then
	# A list's tests of another file system (ext4/NNN under xfs) are left out:
	# xfstests would run them on FSTYP and fail them for the wrong reason.
	mapfile -t tests < <(grep -v '^#' "$here/$1.list" | grep -v '^$' |
		grep -E "^(generic|shared|$FSTYP)/")
	mapfile -t other < <(grep -v '^#' "$here/$1.list" | grep -v '^$' |
		grep -vE "^(generic|shared|$FSTYP)/")
	[ "${#other[@]}" -eq 0 ] || echo "not for $FSTYP, left out: ${other[*]}"
	[ "${#tests[@]}" -gt 0 ] || fail "list $1 has no test for $FSTYP"
else
	tests=("$@")
fi
[ "$(id -u)" -eq 0 ] || fail "must run as root"
case $MODE in cbt | snapshot | plain) ;; *) fail "unknown mode '$MODE'" ;; esac
case $FSTYP in ext4 | xfs) ;; *) fail "unknown file system '$FSTYP'" ;; esac
read -r -a disks <<<"${SCRATCH_DISKS:-}"
[ "${#disks[@]}" -ge 2 ] || fail "needs two scratch disks (three in snapshot mode)"
[ "$MODE" != snapshot ] || [ "${#disks[@]}" -ge 3 ] || fail "snapshot mode needs three disks"
[ "$MODE" = plain ] || need_tool

src=${XFSTESTS_DIR:-${BLKSNAP_CACHE:-$HOME/.cache/blksnap-fork}/tools/xfstests}
[ -x "$src/check" ] || fail "no xfstests build at $src (run ci/bootstrap.sh)"
OUT=${VM_OUT:?VM_OUT is not set}/xfstests
mkdir -p "$OUT"
W=/tmp/xfstests-run
mkdir -p "$W"
mount -t tmpfs -o size=512M xfstests "$W"
# The host's tree is read-only in the guest and check writes next to
# itself: an overlay with its upper layer in the tmpfs.
step "setup: xfstests from $src"
mkdir -p "$W/xfstests" "$W/upper" "$W/work"
mount -t overlay -o "lowerdir=$src,upperdir=$W/upper,workdir=$W/work" xfstests-ovl \
	"$W/xfstests"

# The users and groups the permission tests switch to. /etc/shadow is a
# bind mount of virtme-ng's: drop it so that useradd can write the file.
mkdir -p "$W/bin"
cat >"$W/bin/dmsetup" <<EOF
#!/bin/bash
{ $(command -v dmsetup) "\$@" 2>&1 1>&3 3>&- | grep -v '^Kernel not configured for semaphores' >&2; } 3>&1
exit \${PIPESTATUS[0]}
EOF
chmod +x "$W/bin/dmsetup"

step "setup: users"
umount /etc/shadow 2>/dev/null || true
# Each gets its home directory (/home is writable in the guest): su warns
# on stderr without it, which the quota tests (generic/681, 682) compare.
for u in fsgqa fsgqa2 123456-fsgqa; do
	id "$u" >/dev/null 2>&1 || useradd -M -U "$u" >/dev/null 2>&1 ||
		useradd -M -U --badname "$u" >/dev/null 2>&1 || fail "useradd $u failed"
	home=$(getent passwd "$u" | cut -d: -f6)
	mkdir -p "$home" && chown "$u:" "$home" || fail "no home directory $home for $u"
done

mkfs_dev() {
	case $FSTYP in
	ext4) mkfs.ext4 -q -F "$1" ;;
	xfs) mkfs.xfs -q -f "$1" ;;
	esac
}

bg_pids=()
ORIGIN_ID=
cleanup() {
	for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	umount /tmp/xfs-test /tmp/xfs-scratch 2>/dev/null || true
	[ -z "$ORIGIN_ID" ] || "$BIN" snapshot destroy --id "$ORIGIN_ID" >/dev/null 2>&1 || true
	umount /tmp/xfs-origin /tmp/xfs-store 2>/dev/null || true
	umount "$W/xfstests" 2>/dev/null || true
	umount "$W" 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p /tmp/xfs-test /tmp/xfs-scratch /tmp/xfs-origin /tmp/xfs-store

step "setup: devices ($MODE)"
case $MODE in
plain | cbt)
	TEST_DEV=${disks[0]} SCRATCH_DEV=${disks[1]}
	if [ "$MODE" = cbt ]; then
		for d in "$TEST_DEV" "$SCRATCH_DEV"; do bs attach "$d" >/dev/null; done
	fi
	mkfs_dev "$TEST_DEV"
	;;
snapshot)
	ORIGIN=${disks[0]} SCRATCH_DEV=${disks[1]} STORE=${disks[2]}
	mkfs.ext4 -q -F "$STORE"
	mount "$STORE" /tmp/xfs-store
	mkdir -p /tmp/xfs-store/origin /tmp/xfs-store/scratch
	for d in "$ORIGIN" "$SCRATCH_DEV"; do bs attach "$d" >/dev/null; done
	mkfs_dev "$ORIGIN"
	mount "$ORIGIN" /tmp/xfs-origin
	mkdir /tmp/xfs-origin/writer
	# Some data in the file system before the take: 32 files of 1 MiB.
	mkdir /tmp/xfs-origin/before
	for i in $(seq 32); do
		dd if=/dev/urandom of="/tmp/xfs-origin/before/f$i" bs=1M count=1 status=none
	done
	ORIGIN_SUM=$(cd /tmp/xfs-origin/before && find . -type f -print0 | sort -z |
		xargs -0 cat | sha256sum)
	# Storage limits: a chunk is kept once, so a snapshot of a 1 GiB disk
	# never needs more than 1 GiB. The files grow by 1 GiB steps up to
	# their limits, and both must fit on STORE (3 GiB) at once: with
	# larger limits the origin's file grows to 2 GiB and the scratch
	# rounds find the file system full (ENOSPC breaks their snapshots).
	ORIGIN_ID=$("$BIN" snapshot create --storage /tmp/xfs-store/origin --limit 1100M "$ORIGIN")
	bs snapshot take --id "$ORIGIN_ID" >/dev/null
	TEST_DEV=$(image_of "$ORIGIN")
	udevadm settle 2>/dev/null || true
	[ -b "$TEST_DEV" ] || fail "no image $TEST_DEV"
	# The origin keeps receiving writes through its file system while the
	# tests use the image: files of 1 MiB written, synced and replaced.
	(
		i=0
		while :; do
			dd if=/dev/urandom of=/tmp/xfs-origin/writer/f$((i % 64)) bs=64k count=16 \
				conv=fsync status=none || exit 1
			i=$((i + 1))
			sleep 0.5
		done
	) &
	bg_pids+=($!)
	# SCRATCH_DEV's file system, whatever the test is doing with it, is
	# snapshotted at several points: take, read the whole image, check the
	# snapshot reports no error, destroy. Each round leaves a line in
	# $W/scratch-rounds; a failed round leaves "FAIL ...".
	(
		while :; do
			sleep 20
			id=$("$BIN" snapshot create --storage /tmp/xfs-store/scratch --limit 1100M \
				"$SCRATCH_DEV" 2>&1) || {
				echo "FAIL create: $id" >>"$W/scratch-rounds"
				continue
			}
			if ! "$BIN" snapshot take --id "$id" >/dev/null 2>&1; then
				echo "FAIL take $id" >>"$W/scratch-rounds"
			else
				img=$(image_of "$SCRATCH_DEV")
				udevadm settle 2>/dev/null || true
				if ! dd if="$img" of=/dev/null bs=1M status=none; then
					echo "FAIL read $img" >>"$W/scratch-rounds"
				fi
				info=$("$BIN" snapshot info "$SCRATCH_DEV" 2>&1)
				if grep -q '^error_code: 0$' <<<"$info"; then
					echo "ok $(date +%s)" >>"$W/scratch-rounds"
				else
					echo "FAIL info: $info" >>"$W/scratch-rounds"
				fi
			fi
			"$BIN" snapshot destroy --id "$id" >/dev/null 2>&1 ||
				echo "FAIL destroy $id" >>"$W/scratch-rounds"
		done
	) &
	bg_pids+=($!)
	;;
esac

step "xfstests ($MODE, $FSTYP): ${#tests[@]} tests, TEST_DEV=$TEST_DEV SCRATCH_DEV=$SCRATCH_DEV"
rc=0
(
	cd "$W/xfstests"
	export FSTYP TEST_DEV SCRATCH_DEV TEST_DIR=/tmp/xfs-test SCRATCH_MNT=/tmp/xfs-scratch
	export RESULT_BASE=$W/results
	# The kernel has no System V semaphores, and libdevmapper says so on
	# stderr at every udev-synchronised call, into the output the tests
	# compare (generic/034 fails on it): a dmsetup first on PATH drops
	# that one line and keeps the rest and the status.
	export PATH=$W/bin:$PATH
	# The image carries the origin's file system, mounted at the same time:
	# xfs refuses a second mount of one UUID unless told.
	if [ "$MODE" = snapshot ] && [ "$FSTYP" = xfs ]; then
		export TEST_FS_MOUNT_OPTS="-o nouuid"
	fi
	./check -R xunit "${tests[@]}"
) 2>&1 | tee "$OUT/check.log" || rc=$?
cp -a "$W/results/." "$OUT/" 2>/dev/null || true

xml=$W/results/result.xml
[ -f "$xml" ] || fail "xfstests wrote no xunit report (check exited $rc)"
read -r total failed notrun < <(python3 - "$xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
total = failed = notrun = 0
for c in cases:
    total += 1
    if c.find("skipped") is not None:
        notrun += 1
    elif c.find("failure") is not None or c.find("error") is not None:
        failed += 1
print(total, failed, notrun)
EOF
)
passed=$((total - failed - notrun))
echo "xfstests ($MODE, $FSTYP): $passed passed, $failed failed, $notrun not run"
grep -E '^(Not run|Failures):' "$OUT/check.log" || true

status=0
[ "$rc" -eq 0 ] || {
	echo "FAIL: check exited $rc"
	status=1
}
[ "$failed" -eq 0 ] || status=1
[ "$passed" -gt 0 ] || {
	echo "FAIL: no test passed"
	status=1
}

case $MODE in
cbt)
	# The tracker saw the tests' writes: after a snapshot of both disks
	# (which closes the tracker's generation), both have changed blocks.
	id=$("$BIN" snapshot create --storage /dev/shm --limit 256M "$TEST_DEV" "$SCRATCH_DEV")
	bs snapshot take --id "$id" >/dev/null
	bs snapshot destroy --id "$id" >/dev/null
	for d in "$TEST_DEV" "$SCRATCH_DEV"; do
		[ -n "$(bs readcbtmap "$d" | head -1)" ] || {
			echo "FAIL: no changed block recorded on $d"
			status=1
		}
	done
	;;
snapshot)
	for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	bg_pids=()
	rounds=$(grep -c '^ok' "$W/scratch-rounds" 2>/dev/null || true)
	echo "snapshots of SCRATCH_DEV taken, read and destroyed: ${rounds:-0}"
	if grep '^FAIL' "$W/scratch-rounds" 2>/dev/null; then
		echo "FAIL: a snapshot round of SCRATCH_DEV failed"
		status=1
	fi
	[ "${rounds:-0}" -ge 2 ] || {
		echo "FAIL: fewer than two snapshots of SCRATCH_DEV"
		status=1
	}
	info=$("$BIN" snapshot info "$ORIGIN")
	grep -q '^error_code: 0$' <<<"$info" || {
		echo "FAIL: the origin's snapshot reports an error: $info"
		status=1
	}
	bs snapshot destroy --id "$ORIGIN_ID" >/dev/null
	ORIGIN_ID=
	# The origin's file system never saw the image's writes: the data of
	# before the take is intact and the file system checks clean.
	sum=$(cd /tmp/xfs-origin/before && find . -type f -print0 | sort -z | xargs -0 cat |
		sha256sum)
	[ "$sum" = "$ORIGIN_SUM" ] || {
		echo "FAIL: the origin's files changed"
		status=1
	}
	umount /tmp/xfs-origin
	case $FSTYP in
	ext4) fsck.ext4 -fn "$ORIGIN" >"$OUT/origin-fsck.log" 2>&1 ;;
	xfs) xfs_repair -n "$ORIGIN" >"$OUT/origin-fsck.log" 2>&1 ;;
	esac || {
		echo "FAIL: the origin's file system does not check clean (see origin-fsck.log)"
		status=1
	}
	;;
esac
[ "$status" -eq 0 ] && echo "PASS: xfstests ($MODE, $FSTYP)"
exit "$status"
