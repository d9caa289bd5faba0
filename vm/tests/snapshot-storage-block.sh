#!/usr/bin/env bash
# Guest-side test: a block-device difference storage with a larger logical
# block than the origin (a 4 KiB-sector scsi_debug disk under a 512-byte
# virtio disk) is refused when the device joins the snapshot, with EINVAL
# and a kernel log line, instead of image reads and stores of partial
# blocks failing with EIO later. A storage of the origin's block size
# still works.
# vm: --disk 32M --disk 32M --append scsi_debug.sector_size=4096 --append scsi_debug.dev_size_mb=32 --timeout 300
# vm-requires: CONFIG_BLKSNAP CONFIG_SCSI_DEBUG
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
read -r -a disks <<<"${SCRATCH_DISKS:-}"
A=${disks[0]:-}
S=${disks[1]:-}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -b "$A" ] && [ -b "$S" ] || fail "needs two scratch block devices ('$A' '$S')"
need_tool
D=$(scsi_debug_disk) || fail "no scsi_debug disk"
[ "$(blockdev --getss "$D")" -eq 4096 ] || fail "$D does not have 4 KiB sectors"
[ "$(blockdev --getss "$A")" -eq 512 ] || fail "$A does not have 512-byte sectors"
ID=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	"$BIN" detach "$A" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$BIN" detach "$A" >/dev/null 2>&1 || true
bs attach "$A" >/dev/null
step "a 4 KiB-block storage for a 512-byte origin is refused"
ID=$("$BIN" snapshot create --storage "$D" --limit 16M)
expect_refusal "$ID" "$A" "Invalid argument" "the difference storage has 4096-byte blocks"
bs snapshot destroy --id "$ID" >/dev/null
ID=

step "a storage of the origin's block size works"
dd if=/dev/urandom of="$A" bs=1M count=8 oflag=direct status=none
ID=$("$BIN" snapshot create --storage "$S" --limit 16M "$A")
bs snapshot take --id "$ID" >/dev/null
IMG=/dev/blksnap-image_$(lsblk -dno MAJ:MIN "$A" | tr -d ' ')
for _ in $(seq 50); do [ -b "$IMG" ] && break; sleep 0.1; done
head -c $((8 << 20)) "$IMG" >/dev/null
cmp -n $((8 << 20)) "$IMG" "$A" || fail "the image differs"
bs snapshot destroy --id "$ID" >/dev/null
ID=
echo "snapshot-storage-block: all checks passed"
