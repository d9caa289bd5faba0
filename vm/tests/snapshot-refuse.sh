#!/usr/bin/env bash
# Guest-side test of the refusal of devices whose data a copy cannot keep:
# a scsi_debug disk with protection information (dif=1 dix=1, so the disk
# has an integrity profile), and a null_blk disk with an inline encryption
# profile (null_blk.crypto_profile=1, a test-only parameter of the fork).
# Change tracking may be attached; adding either to a snapshot fails with
# EPERM, the kernel log names the device and the reason, the tool says
# why, and the snapshot stays usable for other devices.
#
# usage (as root, in a guest running the fork, booted with
# scsi_debug.dif=1 scsi_debug.dix=1 null_blk.crypto_profile=1):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/snapshot-refuse.sh DISK
# vm: --disk 32M --append scsi_debug.dev_size_mb=16 --append scsi_debug.dif=1 --append scsi_debug.dix=1 --append null_blk.crypto_profile=1 --timeout 600
# vm-requires: CONFIG_BLKSNAP CONFIG_SCSI_DEBUG CONFIG_BLK_DEV_INTEGRITY
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
read -r -a disks <<<"${SCRATCH_DISKS:-}"
V=${1:-${disks[0]:-}}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -n "$V" ] && [ -b "$V" ] || fail "needs a scratch block device ('$V')"
need_tool

D=$(scsi_debug_disk) || fail "no scsi_debug disk"
name=$(basename "$D")
[ -d "/sys/block/$name/integrity" ] && [ "$(cat "/sys/block/$name/integrity/format")" != none ] ||
	fail "$D has no integrity profile (format: $(cat "/sys/block/$name/integrity/format" 2>&1))"
echo "integrity disk: $D ($(cat "/sys/block/$name/integrity/format"))"
N=/dev/nullb0
[ -b "$N" ] || fail "no $N"
[ -d /sys/block/nullb0/queue/crypto ] || fail "$N has no inline encryption profile"

WORK=$(mktemp -d /tmp/snapref.XXXXXX)
ID=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	for d in "$D" "$N" "$V"; do "$BIN" detach "$d" >/dev/null 2>&1 || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

step "change tracking attaches to the integrity disk"
bs attach "$D" >/dev/null
bs cbtinfo "$D" >/dev/null

step "a snapshot of it is refused with EPERM, a log line and a clear message"
bs attach "$V" >/dev/null
ID=$("$BIN" snapshot create --storage "$WORK" --limit 16M)
[ -n "$ID" ] || fail "no snapshot id"
rc=0
out=$("$BIN" snapshot add --id "$ID" "$D" 2>&1) || rc=$?
echo "$out"
[ "$rc" -ne 0 ] || fail "the integrity disk was added to a snapshot"
grep -q "Operation not permitted" <<<"$out" || fail "not EPERM: $out"
grep -q "integrity or inline encryption profile" <<<"$out" || fail "the tool does not say why: $out"
grep -q "$(lsblk -dno MAJ:MIN "$D" | tr -d ' ').*refused: the device has an integrity profile" <<<"$(dmesg)" ||
	fail "no kernel log line naming the device and the reason: $(dmesg | grep refused || true)"

step "a snapshot of the crypto-capable disk is refused the same way"
bs attach "$N" >/dev/null
rc=0
out=$("$BIN" snapshot add --id "$ID" "$N" 2>&1) || rc=$?
echo "$out"
[ "$rc" -ne 0 ] || fail "the crypto-capable disk was added to a snapshot"
grep -q "Operation not permitted" <<<"$out" || fail "not EPERM: $out"
grep -q "$(lsblk -dno MAJ:MIN "$N" | tr -d ' ').*refused: the device has an inline encryption profile" \
	<<<"$(dmesg)" || fail "no kernel log line naming $N and the reason"

step "the snapshot still works for another device"
bs snapshot add --id "$ID" "$V" >/dev/null
bs snapshot take --id "$ID" >/dev/null
IMG=/dev/blksnap-image_$(lsblk -dno MAJ:MIN "$V" | tr -d ' ')
for _ in $(seq 50); do [ -b "$IMG" ] && break; sleep 0.1; done
cmp "$IMG" "$V" || fail "the image of the other device differs"
bs snapshot destroy --id "$ID" >/dev/null
ID=
echo "snapshot-refuse: all checks passed"
