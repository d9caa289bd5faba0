#!/usr/bin/env bash
# Guest-side test of a difference storage that grows, overflows and fails:
# - a file on tmpfs, empty at create, with a 64 MiB limit and a growth step
#   of 8 MiB (blksnap.diff_storage_minimum on the command line): while
#   256 MiB are written to the origin, the file grows in steps of 8 MiB up to
#   the limit and never beyond; a "no space" event comes when it cannot grow
#   any more, then a "corrupted" event (ENOSPC) when it overflows; image reads
#   fail from then on; the origin holds every byte written;
# - a block device storage (device mapper) whose table is switched to the
#   error target while the snapshot is held: the snapshot breaks with EIO,
#   the origin keeps every byte;
# - the backup tool, reading an image when its snapshot breaks, stops with an
#   error that names the event and records no backup (no manifest).
#
# usage (as root, in a guest running the fork, booted with
# blksnap.diff_storage_minimum=16384):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/snapshot-storage.sh DISK1 DISK2
# vm: --disk 256M --disk 64M --append blksnap.diff_storage_minimum=16384 --timeout 900
# vm-requires: CONFIG_BLKSNAP CONFIG_BLK_DEV_DM
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
read -r -a disks <<<"${SCRATCH_DISKS:-}"
A=${1:-${disks[0]:-}}
S=${2:-${disks[1]:-}}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
for d in "$A" "$S"; do
	[ -n "$d" ] && [ -b "$d" ] || fail "needs two scratch block devices ('$A' '$S')"
done
need_tool
command -v dmsetup >/dev/null || fail "dmsetup is needed"
grep -q "storage step 16384 sectors" <<<"$(dmesg)" ||
	fail "boot with blksnap.diff_storage_minimum=16384 ($(dmesg | grep 'storage step' || true))"

WORK=$(mktemp -d /tmp/snapst.XXXXXX)
mount -t tmpfs -o size=256M snapst "$WORK"
IDS=()
cleanup() {
	for id in "${IDS[@]}"; do "$BIN" snapshot destroy --id "$id" >/dev/null 2>&1 || true; done
	for d in "$A" "$S"; do "$BIN" detach "$d" >/dev/null 2>&1 || true; done
	dmsetup remove snapstore >/dev/null 2>&1 || true
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
MiB=$((1024 * 1024))

# Writes $2 pieces of 8 MiB of random data to $1 from piece $3 on, keeping
# each piece's checksum in $WORK/sums (piece index, sum); after each piece
# runs "$4" (a command, may be empty).
write_pieces() {
	local dev=$1 n=$2 first=$3 after=$4 i
	for ((i = first; i < first + n; i++)); do
		head -c 8M /dev/urandom >"$WORK/piece"
		dd if="$WORK/piece" of="$dev" bs=8M seek="$i" oflag=direct conv=notrunc status=none
		echo "$i $(sha256sum <"$WORK/piece" | cut -d' ' -f1)" >>"$WORK/sums"
		[ -z "$after" ] || $after
	done
	rm -f "$WORK/piece"
}
# Checks that every piece recorded in $WORK/sums is on $1.
check_pieces() {
	local dev=$1 i want
	while read -r i want; do
		[ "$(dd if="$dev" bs=8M skip="$i" count=1 iflag=direct status=none | sha256sum |
			cut -d' ' -f1)" = "$want" ] || fail "piece $i of the origin is not what was written"
	done <"$WORK/sums"
}
record_size() { stat -c %s "$WORK/diff" >>"$WORK/sizes"; }
# next_event ID: the next event of snapshot ID, one JSON object.
next_event() { "$BIN" snapshot wait-event --json --id "$1" --timeout 10000 2>&1 || true; }

step "a file storage grows in steps of 8 MiB up to its 64 MiB limit"
"$BIN" detach "$A" >/dev/null 2>&1 || true
bs attach "$A" >/dev/null
: >"$WORK/sizes"
: >"$WORK/sums"
ID=$("$BIN" snapshot create --storage "$WORK/diff" --limit 64M "$A")
IDS+=("$ID")
bs snapshot take --id "$ID" >/dev/null
record_size
write_pieces "$A" 32 0 record_size
sync
record_size
echo "storage sizes seen: $(sort -nu "$WORK/sizes" | tr '\n' ' ')"
while read -r size; do
	[ $((size % (8 * MiB))) -eq 0 ] || fail "storage size $size is not a multiple of the step"
	[ "$size" -le $((64 * MiB)) ] || fail "storage grew to $size, beyond the limit"
done <"$WORK/sizes"
[ "$(sort -nu "$WORK/sizes" | wc -l)" -ge 4 ] || fail "the storage did not grow in steps"
[ "$(tail -1 "$WORK/sizes")" -eq $((64 * MiB)) ] || fail "the storage stopped short of the limit"
sort -nc "$WORK/sizes" || fail "the storage shrank"

step "a no-space event, then a corrupted event"
ev1=$(next_event "$ID")
ev2=$(next_event "$ID")
echo "events: $ev1 / $ev2"
grep -q '"no-space"' <<<"$ev1" || fail "first event is not no-space: $ev1"
[ "$(json_field 'd["limit_sectors"]' <<<"$ev1")" -eq $((64 * 2048)) ] ||
	fail "no-space event does not give the limit: $ev1"
grep -q '"corrupted"' <<<"$ev2" || fail "second event is not corrupted: $ev2"
[ "$(json_field 'd["error_code"]' <<<"$ev2")" -eq 28 ] || fail "not ENOSPC (positive, as v6 reports it): $ev2"
info=$("$BIN" snapshot info "$A")
grep -q "error_code: -28" <<<"$info" || fail "snapshot info does not report ENOSPC: $info"
if dd if="$(image_of "$A")" of=/dev/null bs=1M count=1 iflag=direct status=none 2>/dev/null; then
	fail "the image of a broken snapshot still reads"
fi

step "the origin holds all 256 MiB written"
check_pieces "$A"
bs snapshot destroy --id "$ID" >/dev/null
IDS=()

step "an I/O error of a block device storage breaks the snapshot, not the origin"
dmsetup create snapstore --table "0 $(blockdev --getsz "$S") linear $S 0"
udevadm settle 2>/dev/null || true
ID=$("$BIN" snapshot create --storage /dev/mapper/snapstore --limit 64M "$A")
IDS+=("$ID")
bs snapshot take --id "$ID" >/dev/null
: >"$WORK/sums"
write_pieces "$A" 1 0 ""
dd if="$(image_of "$A")" of=/dev/null bs=8M count=1 iflag=direct status=none ||
	fail "the image does not read before the error"
dmsetup suspend snapstore
dmsetup load snapstore --table "0 $(blockdev --getsz "$S") error"
dmsetup resume snapstore
write_pieces "$A" 3 1 ""
ev=$(next_event "$ID")
echo "event: $ev"
grep -q '"corrupted"' <<<"$ev" || fail "no corrupted event: $ev"
[ "$(json_field 'd["error_code"]' <<<"$ev")" -eq 5 ] || fail "not EIO (positive, as v6 reports it): $ev"
grep -q "error_code: -5" <<<"$("$BIN" snapshot info "$A")" || fail "snapshot info does not report EIO"
check_pieces "$A"
write_pieces "$A" 2 4 ""
check_pieces "$A"
bs snapshot destroy --id "$ID" >/dev/null
IDS=()
# udev may still be probing the device after the snapshot let it go (the
# guest has no System V semaphores, so dmsetup cannot wait for udev): wait
# for the probes, and retry a remove that finds the device busy.
udevadm settle 2>/dev/null || true
dmsetup remove --retry snapstore

step "a backup stops when its snapshot breaks while it is read"
# The second disk, free again, with a storage too small for what a writer
# changes while the backup reads it.
mkdir -p "$WORK/backups"
: >"$WORK/sums"
write_pieces "$S" 8 0 ""
: >"$WORK/sums"
(
	# As soon as the snapshot is taken (its image appears).
	for _ in $(seq 600); do [ -b "$(image_of "$S")" ] && break; sleep 0.05; done
	write_pieces "$S" 8 0 ""
) &
writer=$!
rc=0
out=$("$BIN" backup --repo "$WORK/backups" --storage "$WORK/diff2" --limit 4M "$S" 2>&1) || rc=$?
wait "$writer"
echo "$out" | tail -3
[ "$rc" -ne 0 ] || fail "the backup of a broken snapshot succeeded"
grep -q 'corrupted' <<<"$out" || fail "the backup's error does not name the event: $out"
if find "$WORK/backups" -name '*.json' | grep -q .; then
	fail "a manifest was left for the broken backup: $(find "$WORK/backups" -name '*.json')"
fi
check_pieces "$S"
echo "snapshot-storage: all checks passed"
