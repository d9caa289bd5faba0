#!/usr/bin/env bash
# Guest-side test: snapshots of a zoned device are refused (a zone reset or
# finish destroys data without a write that copy-on-write could hold, so an
# image could not be kept right). A memory-backed zoned null_blk made
# through configfs: change tracking attaches, writes and a zone reset go
# through it; adding the device to a snapshot fails with
# EOPNOTSUPP and a kernel log line naming the device and the reason.
#
# usage (as root, in a guest running the fork):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/snapshot-zoned.sh
# vm: --timeout 300
# vm-requires: CONFIG_BLKSNAP CONFIG_BLK_DEV_ZONED CONFIG_CONFIGFS_FS
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
[ "$(id -u)" -eq 0 ] || fail "must run as root"
need_tool

CFG=/sys/kernel/config
mountpoint -q "$CFG" || mount -t configfs none "$CFG"
[ -d "$CFG/nullb" ] || fail "null_blk has no configfs directory"
NB=$CFG/nullb/zoned0
WORK=$(mktemp -d /tmp/zoned.XXXXXX)
ID= Z=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	[ -z "$Z" ] || "$BIN" detach "$Z" >/dev/null 2>&1 || true
	[ ! -d "$NB" ] || { echo 0 >"$NB/power" 2>/dev/null; rmdir "$NB" 2>/dev/null; } || true
	rm -rf "$WORK"
}
trap cleanup EXIT

step "a zoned memory-backed null_blk (16 zones of 4 MiB)"
mkdir "$NB"
echo 1 >"$NB/memory_backed"
echo 1 >"$NB/zoned"
echo 4 >"$NB/zone_size"
echo 64 >"$NB/size"
echo 1 >"$NB/power"
# A configfs device is named after its directory.
Z=/dev/zoned0
for _ in $(seq 50); do [ -b "$Z" ] && break; sleep 0.1; done
[ -b "$Z" ] || fail "no $Z"
[ "$(cat "/sys/block/$(basename "$Z")/queue/zoned")" = host-managed ] || fail "$Z is not zoned"

step "change tracking attaches; writes and a zone reset pass"
bs attach "$Z" >/dev/null
dd if=/dev/urandom of="$Z" bs=1M count=4 oflag=direct status=none
BS=$(cbt_field "$Z" block_size)
blkzone reset -o 0 -c 1 "$Z"
rep=$(blkzone report -c 1 "$Z")
echo "$rep"
grep -qE "wptr 0x0+ " <<<"$rep" || fail "zone 0 was not reset: $rep"

step "a snapshot of it is refused with EOPNOTSUPP and a log line"
ID=$("$BIN" snapshot create --storage "$WORK" --limit 16M)
[ -n "$ID" ] || fail "no snapshot id"
expect_refusal "$ID" "$Z" "not supported" "the device is zoned"
bs snapshot destroy --id "$ID" >/dev/null
ID=
echo "snapshot-zoned: all checks passed (tracking blocks of $BS bytes)"
