#!/usr/bin/env bash
# Guest-side test of snapshots: two devices taken at once with the difference
# storage in a tmpfs directory (an O_TMPFILE file). While the origins are
# overwritten with random data (and partly discarded), each image reads back
# exactly as its origin was at the take; a write to an image stays in the
# image and never reaches the origin; destroy removes the images and change
# tracking goes on. Then the same with the storage on a regular file of an
# ext4 file system and on a block device.
#
# usage (as root, in a guest running the fork):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/snapshot-images.sh DISK1 DISK2 DISK3
# vm: --disk 32M --disk 32M --disk 64M --timeout 600
# vm-requires: CONFIG_BLKSNAP
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
read -r -a disks <<<"${SCRATCH_DISKS:-}"
A=${1:-${disks[0]:-}}
B=${2:-${disks[1]:-}}
C=${3:-${disks[2]:-}}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
for d in "$A" "$B" "$C"; do
	[ -n "$d" ] && [ -b "$d" ] || fail "needs three scratch block devices ('$A' '$B' '$C')"
done
need_tool

WORK=$(mktemp -d /tmp/snap.XXXXXX)
mount -t tmpfs -o size=256M snap-test "$WORK"
ID=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	umount "$WORK/ext4" 2>/dev/null || true
	for d in "$A" "$B"; do "$BIN" detach "$d" >/dev/null 2>&1 || true; done
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

sum() { sha256sum "$1" | cut -d' ' -f1; }
image_of() {
	local mm
	mm=$(lsblk -dno MAJ:MIN "$1" | tr -d ' ')
	echo "/dev/blksnap-image_$mm"
}
# Fills $1 with random data of seed-independent content (count MiB).
fill() { dd if=/dev/urandom of="$1" bs=1M count="$2" oflag=direct status=none; }

step "attach and fill"
for d in "$A" "$B"; do
	"$BIN" detach "$d" >/dev/null 2>&1 || true
	bs attach "$d" >/dev/null
	fill "$d" 32
done
SUM_A=$(sum "$A")
SUM_B=$(sum "$B")

# One round: create with storage $1 (and --limit), take both devices, check.
round() {
	local storage=$1 what=$2
	step "$what: create and take"
	ID=$("$BIN" snapshot create --storage "$storage" --limit 128M "$A" "$B")
	[ -n "$ID" ] || fail "no snapshot id"
	local ids
	ids=$("$BIN" snapshot collect)
	grep -q "$ID" <<<"$ids" || fail "collect does not list $ID"
	bs snapshot take --id "$ID" >/dev/null
	local IA IB
	IA=$(image_of "$A")
	IB=$(image_of "$B")
	udevadm settle 2>/dev/null || true
	[ -b "$IA" ] && [ -b "$IB" ] || fail "image disks missing: $IA $IB"
	local info
	info=$("$BIN" snapshot info "$A")
	grep -q "blksnap-image_" <<<"$info" || fail "snapshot info names no image: $info"
	[ "$(blockdev --getsize64 "$IA")" -eq "$(blockdev --getsize64 "$A")" ] ||
		fail "image size differs from the origin's"

	step "$what: images hold the data of the take while the origins change"
	[ "$(sum "$IA")" = "$SUM_A" ] || fail "image of A differs before any write"
	fill "$A" 32
	dd if=/dev/urandom of="$B" bs=4k seek=100 count=300 oflag=direct status=none
	blkdiscard -o $((4 << 20)) -l $((4 << 20)) "$B" 2>/dev/null || true
	dd if=/dev/urandom of="$B" bs=512 seek=12345 count=3 oflag=direct status=none
	local NEW_A NEW_B
	NEW_A=$(sum "$A")
	NEW_B=$(sum "$B")
	[ "$NEW_A" != "$SUM_A" ] || fail "the origin did not change"
	[ "$(sum "$IA")" = "$SUM_A" ] || fail "image of A changed with its origin"
	[ "$(sum "$IB")" = "$SUM_B" ] || fail "image of B changed with its origin"
	# Small reads of the image at odd offsets, across chunk boundaries.
	cmp <(dd if="$IA" bs=512 skip=511 count=3 iflag=direct status=none) \
		<(dd if="$WORK/a.take" bs=512 skip=511 count=3 status=none) ||
		fail "a small read of the image differs"

	step "$what: a write to an image stays in the image"
	dd if=/dev/zero of="$IA" bs=64k seek=3 count=5 oflag=direct status=none
	[ "$(sum "$A")" = "$NEW_A" ] || fail "a write to the image reached the origin"
	[ "$(dd if="$IA" bs=64k skip=3 count=5 status=none | tr -d '\0' | wc -c)" -eq 0 ] ||
		fail "the image does not read back what was written to it"
	[ "$(dd if="$IA" bs=64k count=3 status=none | sha256sum | cut -d' ' -f1)" = \
		"$(dd if="$WORK/a.take" bs=64k count=3 status=none | sha256sum | cut -d' ' -f1)" ] ||
		fail "the image changed outside of the range written"
	local info
	info=$("$BIN" snapshot info "$A")
	grep -qx "error_code: 0" <<<"$info" || fail "snapshot info reports an error: $info"

	step "$what: destroy"
	bs snapshot destroy --id "$ID" >/dev/null
	ID=
	udevadm settle 2>/dev/null || true
	[ ! -e "$IA" ] || fail "image of A still there after destroy"
	[ -z "$("$BIN" snapshot collect)" ] || fail "snapshots left after destroy"
	cbt_field "$A" changes_number >/dev/null || fail "tracking stopped with the snapshot"
	# The next round starts from the current data.
	SUM_A=$NEW_A
	SUM_B=$NEW_B
	dd if="$A" of="$WORK/a.take" bs=1M status=none
}

dd if="$A" of="$WORK/a.take" bs=1M status=none
mkdir "$WORK/tmp"
round "$WORK/tmp" "storage: O_TMPFILE in tmpfs"

step "storage: a regular file on ext4"
mkfs.ext4 -q -F "$C"
mkdir "$WORK/ext4"
mount "$C" "$WORK/ext4"
round "$WORK/ext4/diff.img" "storage: file on ext4"
rm -f "$WORK/ext4/diff.img"
umount "$WORK/ext4"

step "storage: a block device"
round "$C" "storage: block device"

echo "snapshot-images: all checks passed"
