#!/usr/bin/env bash
# Guest-side test: a write to a snapshot image is recorded by change
# tracking, as blksnap v6 documents it ("If a write operation was performed
# for the snapshot, then the change tracker takes this into account"). The
# block shows in the map of the take (a backup read from the image after
# the write copies it) and in the next one (the next backup copies it back
# from the origin, which never had the write); the tool's next incremental
# carries it and its restore equals the origin.
#
# usage (as root, in a guest running the fork):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/snapshot-image-cbt.sh DISK
# vm: --disk 64M --timeout 600
# vm-requires: CONFIG_BLKSNAP
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
DISK=${1:-${SCRATCH_DISKS%% *}}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -b "$DISK" ] || fail "needs a scratch block device ('$DISK')"
need_tool

WORK=$(mktemp -d /tmp/imgcbt.XXXXXX)
mount -t tmpfs -o size=256M imgcbt "$WORK"
ID=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	"$BIN" detach "$DISK" >/dev/null 2>&1 || true
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
NAME=$(basename "$DISK")
MM=$(lsblk -dno MAJ:MIN "$DISK" | tr -d ' ')
IMG=/dev/blksnap-image_$MM

step "attach, fill and a full backup"
"$BIN" detach "$DISK" >/dev/null 2>&1 || true
bs attach "$DISK" >/dev/null
dd if=/dev/urandom of="$DISK" bs=1M count=64 oflag=direct status=none
bs backup --repo "$WORK/repo" --storage "$WORK" "$DISK" >/dev/null
BS=$(cbt_field "$DISK" block_size)
[ -n "$BS" ] || fail "no block size"

step "a snapshot; one block written to its image, none to the origin"
ID=$("$BIN" snapshot create --storage "$WORK" --limit 64M "$DISK")
bs snapshot take --id "$ID" >/dev/null
N=$(cbt_field "$DISK" changes_number)
for _ in $(seq 50); do [ -b "$IMG" ] && break; sleep 0.1; done
[ -b "$IMG" ] || fail "no image $IMG"
[ -z "$(bs readcbtmap --newer-than $((N - 1)) "$DISK")" ] ||
	fail "the map of the take has blocks before any write"
# 4 KiB in block 5 of the map.
write_at "$IMG" $((5 * BS + 8192)) 4096
sync
got=$(bs readcbtmap --newer-than $((N - 1)) "$DISK" | expand_runs | tr '\n' ' ')
echo "map of the take after the image write: blocks $got (number $N)"
[ "$got" = "5 " ] || fail "the image write is not in the map of the take: '$got'"
bs readcbtmap --newer-than $((N - 1)) "$DISK" | awk -v n="$N" '$3 != n { exit 1 }' ||
	fail "the image write is not marked with the take's changes number $N"
bs snapshot destroy --id "$ID" >/dev/null
ID=

step "the next incremental carries the block back from the origin"
bs backup --repo "$WORK/repo" --storage "$WORK" "$DISK" | tee "$WORK/b2.txt"
grep -qi "incremental" "$WORK/b2.txt" || fail "the second backup is not an incremental"
N2=$(cbt_field "$DISK" changes_number)
got=$(bs readcbtmap --newer-than "$N" "$DISK" | expand_runs | tr '\n' ' ')
[ "$got" = "5 " ] || fail "the next take's map does not hold the image's block: '$got'"
bs restore --repo "$WORK/repo" --device "$NAME" "$WORK/restored.img"
cmp "$WORK/restored.img" "$DISK" || fail "the restored chain differs from the origin"
echo "snapshot-image-cbt: all checks passed (takes $N, $N2)"
