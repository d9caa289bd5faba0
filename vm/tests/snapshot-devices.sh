#!/usr/bin/env bash
# Guest-side test of snapshots of other kinds of devices and file systems:
# - xfs mounted on the origin and written during the snapshot: the image,
#   mounted read-only (nouuid: it has the origin's UUID), shows exactly the
#   files of the take;
# - a disk with a partition table, snapshotted whole while its partitions are
#   written through the partition devices: the image of the disk is the disk
#   at the take;
# - a partition alone, while it and its neighbour are written: its image is
#   the partition at the take, and the neighbour is not tracked. (A filter on
#   a partition sees the bios submitted to that partition; writes through the
#   whole disk device reach the filter of the whole disk only.)
#
# usage (as root, in a guest running the fork):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/snapshot-devices.sh DISK1 DISK2
# vm: --disk 320M --disk 64M --timeout 900
# vm-requires: CONFIG_BLKSNAP CONFIG_XFS_FS CONFIG_MSDOS_PARTITION
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
read -r -a disks <<<"${SCRATCH_DISKS:-}"
X=${1:-${disks[0]:-}}
P=${2:-${disks[1]:-}}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
for d in "$X" "$P"; do
	[ -n "$d" ] && [ -b "$d" ] || fail "needs two scratch block devices ('$X' '$P')"
done
need_tool
for t in mkfs.xfs sfdisk; do command -v "$t" >/dev/null || fail "$t is needed"; done

WORK=$(mktemp -d /tmp/snapdev.XXXXXX)
mount -t tmpfs -o size=256M snapdev "$WORK"
IDS=()
cleanup() {
	umount "$WORK/img" 2>/dev/null || true
	umount "$WORK/origin" 2>/dev/null || true
	for id in "${IDS[@]}"; do "$BIN" snapshot destroy --id "$id" >/dev/null 2>&1 || true; done
	for d in "$X" "$P" "${P}1" "${P}2"; do "$BIN" detach "$d" >/dev/null 2>&1 || true; done
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
mkdir "$WORK/diff" "$WORK/origin" "$WORK/img"
files() { (cd "$1" && find . -type f | sort | xargs -r sha256sum); }
sum() { sha256sum "$1" | cut -d' ' -f1; }
destroy() {
	bs snapshot destroy --id "$1" >/dev/null
	IDS=()
}

step "xfs on the origin, written during the snapshot"
"$BIN" detach "$X" >/dev/null 2>&1 || true
bs attach "$X" >/dev/null
mkfs.xfs -q -f "$X"
mount "$X" "$WORK/origin"
for i in $(seq 10); do head -c 512K /dev/urandom >"$WORK/origin/f$i"; done
mkdir "$WORK/origin/dir"
echo "kept" >"$WORK/origin/dir/kept"
files "$WORK/origin" >"$WORK/at-take"
ID=$("$BIN" snapshot create --storage "$WORK/diff" --limit 128M "$X")
IDS+=("$ID")
bs snapshot take --id "$ID" >/dev/null
# After the take: new files, changed files, a removed file and directory.
for i in $(seq 11 20); do head -c 512K /dev/urandom >"$WORK/origin/f$i"; done
for i in 1 2 3; do head -c 256K /dev/urandom >"$WORK/origin/f$i"; done
rm -r "$WORK/origin/f4" "$WORK/origin/dir"
sync
IMG=$(image_of "$X")
wait_dev "$IMG"
mount -t xfs -o ro,nouuid "$IMG" "$WORK/img"
files "$WORK/img" >"$WORK/in-image"
diff -u "$WORK/at-take" "$WORK/in-image" || fail "the xfs image does not show the files of the take"
[ ! -e "$WORK/img/f11" ] || fail "a file created after the take is in the image"
umount "$WORK/img"
umount "$WORK/origin"
xfs_repair -n "$X" >/dev/null 2>&1 || fail "the origin's xfs is not clean after the snapshot"
destroy "$ID"

step "a disk with a partition table, snapshotted whole"
"$BIN" detach "$P" >/dev/null 2>&1 || true
printf 'label: dos\n,32M,L\n,,L\n' | sfdisk -q "$P"
udevadm settle 2>/dev/null || true
blockdev --rereadpt "$P" 2>/dev/null || true
wait_dev "${P}1"
wait_dev "${P}2"
dd if=/dev/urandom of="${P}1" bs=1M oflag=direct status=none || true
dd if=/dev/urandom of="${P}2" bs=1M oflag=direct status=none || true
bs attach "$P" >/dev/null
AT_TAKE=$(sum "$P")
ID=$("$BIN" snapshot create --storage "$WORK/diff" --limit 128M "$P")
IDS+=("$ID")
bs snapshot take --id "$ID" >/dev/null
# Writes through the partitions reach the whole disk's filter.
dd if=/dev/urandom of="${P}1" bs=1M count=8 seek=4 oflag=direct conv=notrunc status=none
dd if=/dev/urandom of="${P}2" bs=1M count=8 seek=2 oflag=direct conv=notrunc status=none
IMG=$(image_of "$P")
wait_dev "$IMG"
[ "$(sum "$IMG")" = "$AT_TAKE" ] || fail "the image of the disk is not the disk at the take"
[ "$(sum "$P")" != "$AT_TAKE" ] || fail "the writes did not change the disk"
# The changes through the partitions are in the disk's change map.
bs readcbtmap "$P" >"$WORK/map" || fail "no change map of the disk"
destroy "$ID"
bs detach "$P" >/dev/null

step "a partition alone"
bs attach "${P}2" >/dev/null
AT_TAKE=$(sum "${P}2")
P1_BEFORE=$(sum "${P}1")
ID=$("$BIN" snapshot create --storage "$WORK/diff" --limit 64M "${P}2")
IDS+=("$ID")
bs snapshot take --id "$ID" >/dev/null
dd if=/dev/urandom of="${P}2" bs=1M count=8 seek=1 oflag=direct conv=notrunc status=none
dd if=/dev/urandom of="${P}1" bs=1M count=4 oflag=direct conv=notrunc status=none
IMG=$(image_of "${P}2")
wait_dev "$IMG"
[ "$(blockdev --getsize64 "$IMG")" -eq "$(blockdev --getsize64 "${P}2")" ] ||
	fail "the image's size is not the partition's"
[ "$(sum "$IMG")" = "$AT_TAKE" ] || fail "the image of the partition is not the partition at the take"
[ "$(sum "${P}1")" != "$P1_BEFORE" ] || fail "the write to the neighbour did not happen"
if "$BIN" cbtinfo "${P}1" >/dev/null 2>&1; then
	fail "the neighbour partition is tracked"
fi
destroy "$ID"
bs detach "${P}2" >/dev/null
echo "snapshot-devices: all checks passed"
