#!/usr/bin/env bash
# Guest-side test of an origin that goes away while its snapshot is held: a
# scsi_debug disk, tracked and snapshotted, is deleted through sysfs. The
# snapshot is marked corrupted (ENODEV, with an event), its image fails I/O,
# destroy works, the kernel log shows no bug; the other device of the same
# snapshot keeps a working image until destroy.
#
# usage (as root, in a guest running the fork, booted with
# scsi_debug.dev_size_mb=32):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/snapshot-remove.sh DISK
# vm: --disk 32M --append scsi_debug.dev_size_mb=32 --timeout 600
# vm-requires: CONFIG_BLKSNAP CONFIG_SCSI_DEBUG
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
read -r -a disks <<<"${SCRATCH_DISKS:-}"
V=${1:-${disks[0]:-}}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -n "$V" ] && [ -b "$V" ] || fail "needs a scratch block device ('$V')"
need_tool

D=$(scsi_debug_disk) || fail "no scsi_debug disk"
echo "disk to remove: $D"

WORK=$(mktemp -d /tmp/snaprm.XXXXXX)
mount -t tmpfs -o size=64M snaprm "$WORK"
ID=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	"$BIN" detach "$V" >/dev/null 2>&1 || true
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
image_of() { echo "/dev/blksnap-image_$1"; }
sum() { sha256sum "$1" | cut -d' ' -f1; }

step "a snapshot of the scsi_debug disk and a virtio disk"
DMM=$(lsblk -dno MAJ:MIN "$D" | tr -d ' ')
VMM=$(lsblk -dno MAJ:MIN "$V" | tr -d ' ')
dd if=/dev/urandom of="$D" bs=1M count=16 oflag=direct status=none
dd if=/dev/urandom of="$V" bs=1M count=16 oflag=direct status=none
V_AT_TAKE=$(sum "$V")
bs attach "$D" >/dev/null
bs attach "$V" >/dev/null
ID=$("$BIN" snapshot create --storage "$WORK" --limit 32M "$D" "$V")
bs snapshot take --id "$ID" >/dev/null
dd if=/dev/urandom of="$D" bs=1M count=4 oflag=direct conv=notrunc status=none
dd if=/dev/urandom of="$V" bs=1M count=4 oflag=direct conv=notrunc status=none
IMG=$(image_of "$DMM")
for _ in $(seq 50); do [ -b "$IMG" ] && break; sleep 0.1; done
dd if="$IMG" of=/dev/null bs=1M count=8 iflag=direct status=none || fail "the image does not read"

step "the disk goes away while the snapshot is held"
exec 3<"$IMG"
echo 1 >"/sys/block/$(basename "$D")/device/delete"
for _ in $(seq 100); do [ -e "/sys/block/$(basename "$D")" ] || break; sleep 0.1; done
[ ! -e "/sys/block/$(basename "$D")" ] || fail "the disk was not removed"
# The corrupted event (other events, such as no-space, may come first).
ev=$(wait_event "$ID" corrupted) || fail "no corrupted event: $ev"
echo "event: $ev"
grep -q "\"major\": *${DMM%%:*}" <<<"$ev" || grep -q "\"major\":${DMM%%:*}" <<<"$ev" ||
	fail "the event does not name the removed disk: $ev"
if dd if="$IMG" of=/dev/null bs=1M count=1 iflag=direct status=none 2>/dev/null; then
	fail "the image of a removed disk still reads"
fi
exec 3<&-
[ "$(sum "$(image_of "$VMM")")" = "$V_AT_TAKE" ] || fail "the other image changed"

step "destroy works, and the other device is still tracked"
bs snapshot destroy --id "$ID" >/dev/null
ID=
for _ in $(seq 50); do [ -b "$IMG" ] || break; sleep 0.1; done
[ ! -b "$IMG" ] || fail "the image of the removed disk is still there"
bs cbtinfo "$V" >/dev/null
echo "snapshot-remove: all checks passed"
