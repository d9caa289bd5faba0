#!/usr/bin/env bash
# Guest-side test: a REQ_NOWAIT write that needs copy-on-write ends with
# BLK_STS_AGAIN (EAGAIN to user space) instead of waiting for the read of
# old data, as blksnap v6 does; a plain write to the same chunk then copies
# it, after which a NOWAIT write to it goes through. The image keeps the
# data of the take throughout. Writes are pwritev2(RWF_NOWAIT) with direct
# I/O (xfs_io pwrite -N).
# vm: --disk 32M --timeout 300
# vm-requires: CONFIG_BLKSNAP
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
DISK=${1:-${SCRATCH_DISKS%% *}}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -b "$DISK" ] || fail "needs a scratch block device ('$DISK')"
need_tool
command -v xfs_io >/dev/null || fail "no xfs_io"
WORK=$(mktemp -d /tmp/nowait.XXXXXX)
mount -t tmpfs -o size=128M nowait "$WORK"
ID=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	"$BIN" detach "$DISK" >/dev/null 2>&1 || true
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
MM=$(lsblk -dno MAJ:MIN "$DISK" | tr -d ' ')
IMG=/dev/blksnap-image_$MM
# A direct NOWAIT write fails with EAGAIN by itself when pages of its range
# are in the device's page cache (udev's probe after a close puts some
# there, and a held snapshot keeps the origin open, so they stay): drop them
# first (after udev's probe of the last close is done), so that an EAGAIN is
# copy-on-write's.
nowait() {
	udevadm settle 2>/dev/null || true
	blockdev --flushbufs "$DISK"
	xfs_io -d -c "pwrite -q -N -V 1 -S 0x$2 $1 4096" "$DISK" 2>&1 || true
}

"$BIN" detach "$DISK" >/dev/null 2>&1 || true
bs attach "$DISK" >/dev/null
dd if=/dev/urandom of="$DISK" bs=1M count=32 oflag=direct status=none
cp "$DISK" "$WORK/at-take"

step "without a snapshot, a NOWAIT write goes through"
out=$(nowait 0 11)
[ -z "$out" ] || fail "a NOWAIT write failed without a snapshot: $out"
cp "$DISK" "$WORK/at-take"

step "with a snapshot, a NOWAIT write to a chunk not copied yet gets EAGAIN"
ID=$("$BIN" snapshot create --storage "$WORK" --limit 32M "$DISK")
bs snapshot take --id "$ID" >/dev/null
out=$(nowait $((1 << 20)) 22)
echo "NOWAIT write: ${out:-done}"
grep -q "Resource temporarily unavailable" <<<"$out" ||
	fail "a NOWAIT write that needs copy-on-write did not end with EAGAIN: ${out:-it went through}"
cmp -n $((2 << 20)) "$DISK" "$WORK/at-take" || fail "the EAGAIN write changed the origin"

step "a plain write copies the chunk; then a NOWAIT write to it goes through"
xfs_io -d -c "pwrite -q -S 0x33 $((1 << 20)) 4096" "$DISK"
out=$(nowait $((1 << 20)) 44)
[ -z "$out" ] || fail "a NOWAIT write to a copied chunk failed: $out"
for _ in $(seq 50); do [ -b "$IMG" ] && break; sleep 0.1; done
cmp "$IMG" "$WORK/at-take" || fail "the image differs from the take"
grep -q "error_code: 0" <<<"$("$BIN" snapshot info "$DISK")" || fail "the snapshot broke"
echo "snapshot-nowait: all checks passed"
