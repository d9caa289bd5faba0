#!/usr/bin/env bash
# A write in flight at the take. The origin is dm-linear over dm-delay over
# a memory-backed null_blk: a bio-based device (as an LVM volume is) whose
# writes are held DELAY_MS below it, so a write's data lands long after the
# filter counted it. (dm-linear counts its bios in flight from submission;
# dm-delay itself counts a write only once it passes it on, so the filter
# could not see it in flight on dm-delay, see docs/snapshots.md.)
# A direct write W is issued, and the snapshot is taken while dm-delay holds
# it (the device shows it in flight). Once the take has switched the change
# map, a write W2 to another block of W's chunk comes in. Then:
# - the take waits for W: the image, read as soon as the take returns, has
#   W, and still has it once everything has landed;
# - W2 waits for W's chunk to be copied, and that copy is made after W
#   landed: the image has the old data where W2 wrote, and W where W wrote;
# - the take's change map counts W and not W2, the next take's map W2 and
#   a later write: W belongs to this backup, so this image must have it
#   (else no backup of the chain would).
# Then a write W3 is held longer than the take waits: the take gives up,
# says so in the kernel log, and its change map and the next one count
# every block, so that no backup of the chain misses W3.
# vm: --timeout 300
# vm-requires: CONFIG_BLKSNAP CONFIG_BLK_DEV_NULL_BLK CONFIG_CONFIGFS_FS CONFIG_DM_DELAY
set -euo pipefail
. "$(dirname "$0")/lib/cbt.sh"

[ "$(id -u)" -eq 0 ] || fail "must run as root"
need_tool
SIZE_MIB=16
DELAY_MS=4000
# The take waits DRAIN_TIMEOUT_MS for writes in flight (snapshot.rs); W3 is
# held longer.
DRAIN_TIMEOUT_MS=5000
LONG_DELAY_MS=10000
# W: 64 KiB at 1 MiB. W2: 64 KiB at 1 MiB + 128 KiB, in W's chunk (chunks
# are 256 KiB or more) and not in its tracking blocks (64 KiB). A write
# after the snapshot: 64 KiB at 4 MiB.
LEN=$((64 << 10))
OFF=$((1 << 20))
OFF2=$((OFF + 128 * 1024))
LATER=$((4 << 20))
WORK=$(mktemp -d /tmp/snapshot-drain.XXXXXX)
mount -t tmpfs -o size=128M drain "$WORK"
DM=blksnap-drain
DELAYED=blksnap-drain-delay
ID=
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	"$BIN" detach "/dev/mapper/$DM" >/dev/null 2>&1 || true
	dmsetup remove "$DM" 2>/dev/null || true
	dmsetup remove "$DELAYED" 2>/dev/null || true
	if [ -d "$NULLB_CFG/drain" ]; then
		echo 0 >"$NULLB_CFG/drain/power" 2>/dev/null || true
		rmdir "$NULLB_CFG/drain" 2>/dev/null || true
	fi
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
# slice FILE [OFFSET]: LEN bytes of FILE at OFFSET (default OFF), read
# directly from a device.
slice() {
	local direct=()
	[ ! -b "$1" ] || direct=(iflag=direct)
	dd if="$1" bs="$LEN" skip=$((${2:-$OFF} / LEN)) count=1 "${direct[@]}" status=none
}
# put DATA OFFSET: writes DATA (LEN bytes) at OFFSET of the origin, in one
# direct write.
put() { dd if="$1" of="$D" bs="$LEN" seek=$(($2 / LEN)) count=1 oflag=direct conv=notrunc status=none; }
# same FILE OFFSET EXPECTED: whether LEN bytes of FILE at OFFSET are EXPECTED.
same() { slice "$1" "$2" | cmp -s - "$3"; }
# what DATA OFFSET NEW: names what DATA, LEN bytes of the device at OFFSET,
# holds: NEW, the data before the test, or other data.
what() {
	if cmp -s "$1" "$3"; then
		echo "the new data"
	elif cmp -s "$1" <(slice "$WORK/old" "$2"); then
		echo "the old data"
	else
		echo "other data"
	fi
}
# counted OFFSET...: the tracking blocks that LEN bytes at each OFFSET touch.
counted() {
	local o
	for o in "$@"; do seq $((o / bsize)) $(((o + LEN - 1) / bsize)); done | tr '\n' ' '
}
# last_take: the blocks that the map of the last take counts in it.
last_take() {
	bs readcbtmap "$D" | awk -v n="$(cbt_field "$D" changes_number)" '$3 == n' |
		expand_runs | tr '\n' ' '
}
# writes_in_flight: the origin's writes in flight, as the block layer counts them.
writes_in_flight() { awk '{ print $2 }' "/sys/block/$(basename "$(readlink -f "$D")")/inflight"; }
# wait_in_flight NAME: waits until the origin shows the write NAME in flight.
wait_in_flight() {
	for _ in $(seq 100); do
		[ "$(writes_in_flight)" -gt 0 ] && return
		sleep 0.05
	done
	fail "$1 never showed in flight on $D"
}

N=$(make_nullb drain "$SIZE_MIB" 1)
SECTORS=$(blockdev --getsz "$N")
dmsetup create "$DELAYED" --table "0 $SECTORS delay $N 0 0 $N 0 $DELAY_MS"
wait_dev "/dev/mapper/$DELAYED"
dmsetup create "$DM" --table "0 $SECTORS linear /dev/mapper/$DELAYED 0"
D=/dev/mapper/$DM
wait_dev "$D"
step "origin $D: dm-linear over dm-delay over $N, writes held $DELAY_MS ms"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/old"
dd if="$WORK/old" of="$N" bs=1M oflag=direct status=none
head -c "$LEN" /dev/urandom >"$WORK/w"
head -c "$LEN" /dev/urandom >"$WORK/w2"
bs attach "$D" >/dev/null
bsize=$(cbt_field "$D" block_size)
ID=$("$BIN" snapshot create --storage "$WORK" --limit 64M "$D")

step "W in flight when the snapshot is taken; W2 once the map is switched"
put "$WORK/w" "$OFF" &
PIDS+=($!)
wait_in_flight W
t0=$(date +%s%N)
bs snapshot take --id "$ID" >/dev/null &
TAKE=$!
for _ in $(seq 100); do
	"$BIN" cbtinfo "$D" | awk '$1 == "changes_number:" && $2 >= 1 { f = 1 } END { exit !f }' && break
	sleep 0.05
done
running=no
! kill -0 "$TAKE" 2>/dev/null || running=yes
put "$WORK/w2" "$OFF2" &
PIDS+=($!)
wait "$TAKE" || fail "the take failed"
t1=$(date +%s%N)
IMG=$(image_of "$D")
wait_dev "$IMG"
slice "$IMG" "$OFF" >"$WORK/image-w"
slice "$IMG" "$OFF2" >"$WORK/image-w2"
echo "take: $(((t1 - t0) / 1000000)) ms; it was still running when W2 came: $running"
for p in "${PIDS[@]}"; do wait "$p" || fail "a write failed"; done
PIDS=()
cmp -s "$WORK/image-w" "$WORK/w" ||
	fail "the image, read as the take returned, lacks W, which the take counted" \
		"(it has $(what "$WORK/image-w" "$OFF" "$WORK/w"))"
[ "$running" = yes ] || fail "the take had returned before W2 came: W2 tested nothing"
same "$IMG" "$OFF" "$WORK/w" ||
	fail "W's range of the image changed after the take: $(what <(slice "$IMG" "$OFF") "$OFF" "$WORK/w")"
cmp -s "$WORK/image-w2" <(slice "$WORK/old" "$OFF2") ||
	fail "W2's range of the image, read as the take returned, does not hold the old data"
same "$IMG" "$OFF2" <(slice "$WORK/old" "$OFF2") || fail "W2 reached the image"
same "$D" "$OFF" "$WORK/w" || fail "the origin lacks W"
same "$D" "$OFF2" "$WORK/w2" || fail "the origin lacks W2"
got=$(last_take)
[ "$got" = "$(counted "$OFF")" ] || fail "blocks counted in the take: '$got', expected W's: '$(counted "$OFF")'"

step "the next take counts W2 and a later write"
head -c "$LEN" /dev/urandom >"$WORK/later"
put "$WORK/later" "$LATER"
same "$IMG" "$LATER" <(slice "$WORK/old" "$LATER") || fail "a write after the take reached the image"
bs snapshot destroy --id "$ID" >/dev/null
ID=$("$BIN" snapshot create --storage "$WORK" --limit 64M "$D")
bs snapshot take --id "$ID" >/dev/null
got=$(last_take)
[ "$got" = "$(counted "$OFF2" "$LATER")" ] ||
	fail "blocks counted in the next take: '$got', expected '$(counted "$OFF2" "$LATER")'"

step "W3 held past the take's drain timeout: this take's map and the next count every block"
bs snapshot destroy --id "$ID" >/dev/null
ID=
dmsetup reload "$DELAYED" --table "0 $SECTORS delay $N 0 0 $N 0 $LONG_DELAY_MS"
dmsetup resume "$DELAYED"
ID=$("$BIN" snapshot create --storage "$WORK" --limit 64M "$D")
head -c "$LEN" /dev/urandom >"$WORK/w3"
put "$WORK/w3" "$OFF" &
PIDS+=($!)
wait_in_flight W3
t0=$(date +%s%N)
bs snapshot take --id "$ID" >/dev/null
t1=$(date +%s%N)
echo "take: $(((t1 - t0) / 1000000)) ms"
dmesg | grep -q "writes still in flight after $DRAIN_TIMEOUT_MS ms" ||
	fail "the kernel log does not report the drain's timeout"
all=$(seq 0 $(($(cbt_field "$D" block_count) - 1)) | tr '\n' ' ')
[ "$(last_take)" = "$all" ] || fail "the take's map does not count every block: '$(last_take)'"
for p in "${PIDS[@]}"; do wait "$p" || fail "a write failed"; done
PIDS=()
same "$D" "$OFF" "$WORK/w3" || fail "the origin lacks W3"
bs snapshot destroy --id "$ID" >/dev/null
ID=$("$BIN" snapshot create --storage "$WORK" --limit 64M "$D")
bs snapshot take --id "$ID" >/dev/null
[ "$(last_take)" = "$all" ] || fail "the next take's map does not count every block: '$(last_take)'"
echo "snapshot-drain: all checks passed"
