#!/usr/bin/env bash
# Chunks and tracking blocks of 4 KiB, smaller than a page on ppc64le (64 KiB)
# and equal to one on x86_64, with I/O that does not start on a page. For a
# memory-backed null_blk disk of 512-byte and one of 4 KiB logical blocks:
# - direct writes to the origin while a snapshot is held, of one logical
#   block up to three chunks, at offsets that straddle chunks and 64 KiB
#   boundaries, from a buffer that starts 512 bytes into a page or crosses
#   a page boundary, land exactly;
# - the image reads back as the origin was at the take, whole and through
#   direct reads into such buffers at the same odd places;
# - direct writes into the image at such places read back from the image
#   and never reach the origin;
# - the next snapshot's change map has exactly the 4 KiB blocks written.
# vm: --timeout 600 --append blksnap.chunk_minimum_shift=12 --append blksnap.tracking_block_minimum_shift=12
# vm-requires: CONFIG_BLKSNAP CONFIG_BLK_DEV_NULL_BLK CONFIG_CONFIGFS_FS
set -euo pipefail
. "$(dirname "$0")/lib/cbt.sh"
DIO="python3 $(dirname "$0")/lib/dio.py"

need_tool
WORK=$(mktemp -d /tmp/snapshot-subpage.XXXXXX)
mount -t tmpfs -o size=256M subpage "$WORK"
IDS=()
cleanup() {
	local id c
	for id in "${IDS[@]}"; do "$BIN" snapshot destroy --id "$id" >/dev/null 2>&1 || true; done
	for c in "$NULLB_CFG"/subpage-*; do
		[ -d "$c" ] || continue
		"$BIN" detach "/dev/$(basename "$c")" >/dev/null 2>&1 || true
		echo 0 >"$c/power" 2>/dev/null || true
		rmdir "$c" 2>/dev/null || true
	done
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

PAGE=$(getconf PAGESIZE)
SIZE_MIB=8
SIZE=$((SIZE_MIB << 20))
step "page size $PAGE; chunks and tracking blocks asked: 4096 bytes"
params=$(dmesg | grep 'blksnap: chunk parameters' || true)
grep -qF 'Params { min_shift: 12,' <<<"$params" ||
	fail "the kernel does not use blksnap.chunk_minimum_shift=12: $params"
head -c "$SIZE" /dev/urandom >"$WORK/pattern"

# range_blocks OFFSET LENGTH: the 4 KiB blocks that bytes OFFSET..+LENGTH touch.
range_blocks() { seq $(($1 / 4096)) $((($1 + $2 - 1) / 4096)); }
# slice FILE OFFSET LENGTH: bytes OFFSET..+LENGTH of FILE.
slice() { tail -c +$(($2 + 1)) "$1" | head -c "$3"; }
# put FROM TO OFFSET LENGTH: bytes OFFSET..+LENGTH of FROM over the same of TO.
put() {
	dd if="$1" of="$2" bs=512 skip=$(($3 / 512)) seek=$(($3 / 512)) count=$(($4 / 512)) \
		conv=notrunc status=none
}

for LBS in 512 4096; do
	D=$(make_nullb "subpage-$LBS" "$SIZE_MIB" 1 "$LBS")
	step "$D: $LBS-byte logical blocks"
	[ "$(blockdev --getss "$D")" -eq "$LBS" ] || fail "$D: logical block size is not $LBS"
	dd if="$WORK/pattern" of="$D" bs=1M oflag=direct status=none
	bs attach "$D" >/dev/null
	[ "$(cbt_field "$D" block_size)" -eq 4096 ] || fail "$D: tracking block size is not 4096"
	cp "$D" "$WORK/at-take"
	cp "$D" "$WORK/origin"
	ID=$("$BIN" snapshot create --storage "$WORK" --limit 64M "$D")
	IDS=("$ID")
	bs snapshot take --id "$ID" >/dev/null
	IMG=$(image_of "$D")
	wait_dev "$IMG"
	[ "$(blockdev --getss "$IMG")" -eq "$LBS" ] || fail "$IMG: logical block size is not $LBS"

	# OFFSET:LENGTH:BUFFER places, in units that every logical block size
	# allows: a logical block across a chunk boundary (or just before it),
	# three chunks from one logical block past a chunk start, a range across
	# a 64 KiB boundary, the last logical block.
	A=$LBS
	places=(
		"$((8192 - A)):$((2 * A)):512"
		"$((5 * 4096 + (A == 512 ? 512 : 0))):12288:tail"
		"$((3 * 65536 - 4096 - A)):$((8192 + 2 * A)):512"
		"$((SIZE - A)):$A:tail"
	)
	step "$D: direct writes to the origin while the snapshot is held"
	: >"$WORK/written"
	head -c "$SIZE" /dev/urandom >"$WORK/pattern.new"
	for p in "${places[@]}"; do
		IFS=: read -r off len buf <<<"$p"
		$DIO write "$D" "$off" "$len" "$buf" "$WORK/pattern.new"
		put "$WORK/pattern.new" "$WORK/origin" "$off" "$len"
		range_blocks "$off" "$len" >>"$WORK/written"
	done
	cmp "$D" "$WORK/origin" || fail "$D: the origin does not hold what was written"
	! cmp -s "$D" "$WORK/at-take" || fail "$D: the writes changed nothing"

	step "$IMG: the origin at the take, whole and by direct reads at odd places"
	cmp "$IMG" "$WORK/at-take" || fail "$IMG: the image is not the origin at the take"
	for p in "${places[@]}" "$((4096 - A)):$((4096 + 2 * A)):tail" "0:$SIZE:512"; do
		IFS=: read -r off len buf <<<"$p"
		$DIO read "$IMG" "$off" "$len" "$buf" >"$WORK/read"
		cmp -s "$WORK/read" <(slice "$WORK/at-take" "$off" "$len") ||
			fail "$IMG: direct read of $len bytes at $off into a buffer at $buf differs from the take"
	done

	step "$IMG: direct writes to the image stay in it"
	head -c "$SIZE" /dev/urandom >"$WORK/pattern.img"
	cp "$WORK/at-take" "$WORK/image"
	for p in "$((2 * 4096 - A)):$((2 * A)):tail" "$((65536 + A)):$((4096 + A)):512" "$((SIZE - 8192)):8192:512"; do
		IFS=: read -r off len buf <<<"$p"
		$DIO write "$IMG" "$off" "$len" "$buf" "$WORK/pattern.img"
		put "$WORK/pattern.img" "$WORK/image" "$off" "$len"
		# Change tracking counts image writes too (as v6 does): the next
		# backup must copy those blocks back from the origin.
		range_blocks "$off" "$len" >>"$WORK/written"
		$DIO read "$IMG" "$off" "$len" "$buf" >"$WORK/read"
		cmp -s "$WORK/read" <(slice "$WORK/pattern.img" "$off" "$len") ||
			fail "$IMG: the write of $len bytes at $off does not read back"
	done
	cmp "$IMG" "$WORK/image" || fail "$IMG: the image does not hold the take plus its own writes"
	cmp "$D" "$WORK/origin" || fail "$D: a write to the image reached the origin"
	info=$("$BIN" snapshot info "$D")
	grep -q '^error_code: 0$' <<<"$info" || fail "$D: the snapshot reports an error: $info"
	bs snapshot destroy --id "$ID" >/dev/null
	IDS=()

	step "$D: the next snapshot's change map has the blocks written to the origin and the image, and only them"
	ID=$("$BIN" snapshot create --storage "$WORK" --limit 64M "$D")
	IDS=("$ID")
	bs snapshot take --id "$ID" >/dev/null
	bs readcbtmap "$D" | expand_runs | sort -n >"$WORK/marked"
	sort -nu "$WORK/written" >"$WORK/expected"
	diff -u "$WORK/expected" "$WORK/marked" || fail "$D: the change map is not the blocks written"
	bs snapshot destroy --id "$ID" >/dev/null
	IDS=()
	bs detach "$D" >/dev/null
	echo 0 >"$NULLB_CFG/subpage-$LBS/power"
	rmdir "$NULLB_CFG/subpage-$LBS"
done
echo "PASS: snapshot-subpage"
