#!/usr/bin/env bash
# Guest-side test: fscrypt under a held snapshot. ext4 with encryption
# (test_dummy_encryption: every new directory is encrypted with the test
# key), mounted "inlinecrypt" on a device without an inline-encryption
# profile, so that its writes carry an encryption context served by the
# blk-crypto fallback below the filter. Copy-on-write copies the data as
# the device holds it (encrypted), as blksnap v6 does: the snapshot stays
# healthy, its image mounts, and its files read back with the key as they
# were at the take. Then the same without inlinecrypt (fscrypt encrypts in
# the file system).
#
# usage (as root, in a guest running the fork):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/snapshot-fscrypt.sh DISK
# vm: --disk 128M --timeout 600
# vm-requires: CONFIG_BLKSNAP CONFIG_FS_ENCRYPTION CONFIG_BLK_INLINE_ENCRYPTION_FALLBACK
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
DISK=${1:-${SCRATCH_DISKS%% *}}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -b "$DISK" ] || fail "needs a scratch block device ('$DISK')"
need_tool
[ ! -d "/sys/block/$(basename "$DISK")/queue/crypto" ] ||
	fail "$DISK has an inline encryption profile: the test needs the fallback"

WORK=$(mktemp -d /tmp/fscrypt.XXXXXX)
mount -t tmpfs -o size=256M fscrypt "$WORK"
mkdir -p "$WORK/origin" "$WORK/image" "$WORK/store"
ID=
cleanup() {
	umount "$WORK/image" 2>/dev/null || true
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	umount "$WORK/origin" 2>/dev/null || true
	"$BIN" detach "$DISK" >/dev/null 2>&1 || true
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
MM=$(lsblk -dno MAJ:MIN "$DISK" | tr -d ' ')
IMG=/dev/blksnap-image_$MM

round() {
	local opts=$1
	step "ext4 with encryption, mounted -o $opts"
	mkfs.ext4 -q -F -O encrypt "$DISK"
	"$BIN" detach "$DISK" >/dev/null 2>&1 || true
	bs attach "$DISK" >/dev/null
	mount -o "$opts" "$DISK" "$WORK/origin"
	mkdir "$WORK/origin/d"
	for i in 1 2 3 4; do
		dd if=/dev/urandom of="$WORK/origin/d/f$i" bs=1M count=4 status=none
	done
	sync
	(cd "$WORK/origin/d" && sha256sum f*) >"$WORK/sums"

	step "$opts: a snapshot held while the files change"
	ID=$("$BIN" snapshot create --storage "$WORK/store" --limit 128M "$DISK")
	bs snapshot take --id "$ID" >/dev/null
	for i in 1 2 3 4; do
		dd if=/dev/urandom of="$WORK/origin/d/f$i" bs=1M count=4 conv=notrunc status=none
	done
	dd if=/dev/urandom of="$WORK/origin/d/new" bs=1M count=4 status=none
	sync
	local info
	info=$("$BIN" snapshot info "$DISK")
	echo "$info"
	grep -q "error_code: 0" <<<"$info" || fail "$opts: the snapshot broke: $info"
	for _ in $(seq 50); do [ -b "$IMG" ] && break; sleep 0.1; done

	step "$opts: the image mounts and its files read back as at the take"
	mount -o "$opts" "$IMG" "$WORK/image" || fail "$opts: the image does not mount"
	[ ! -e "$WORK/image/d/new" ] || fail "$opts: a file made after the take is in the image"
	(cd "$WORK/image/d" && sha256sum -c --quiet "$WORK/sums") ||
		fail "$opts: the image's files differ from the take"
	umount "$WORK/image"
	bs snapshot destroy --id "$ID" >/dev/null
	ID=
	umount "$WORK/origin"
	grep -q "$MM.*snapshot corrupted" <<<"$(dmesg)" && fail "$opts: the kernel reports a corrupted snapshot"
	return 0
}

round test_dummy_encryption,inlinecrypt
round test_dummy_encryption
echo "snapshot-fscrypt: all checks passed"
