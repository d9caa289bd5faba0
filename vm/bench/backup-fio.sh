#!/bin/bash
# Guest side of ci/bench.sh backup: how fast the tool reads a snapshot,
# against fio reading the same image in the same boot.
#
# usage (as root, in a guest running the fork, BLKSNAP_BIN set):
#   vm/bench/backup-fio.sh [REPS] [SIZE_MIB]        defaults: 3 pairs, 1024 MiB
#
# The origin is a memory-backed null_blk device filled with random data;
# the difference storage and the repository are on tmpfs (the repository's
# writes are the backup's, the storage is not written: nothing changes the
# origin while the image is read). Each pair, in alternating order:
#   fio:    a snapshot taken by hand, fio reads its image sequentially
#           (1 MiB blocks, direct, io_uring, iodepth 4), then destroyed;
#   backup: blksnap backup --full of the device into a fresh repository.
# Then an incremental after 1 % of the device's tracking blocks were
# written, timed against fio reading the same share of the image.
# Prints MiB/s of each run and the median ratio backup / fio with its
# spread. Target of the design: full backup >= 0.9.
set -euo pipefail
REPS=${1:-3}
SIZE=${2:-1024}
. "$(dirname "$0")/lib.sh"
WORK=$(mktemp -d /tmp/backupbench.XXXXXX)
mount -t tmpfs -o size=$((2 * SIZE + 256))M backupbench "$WORK"
ID=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	"$BIN" detach "${A:-/nonexistent}" >/dev/null 2>&1 || true
	umount "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
tools_in_memory /run/benchtools fio
A=$(make_nullb bench-backup "$SIZE" 1)
dd if=/dev/urandom of="$A" bs=1M count="$SIZE" oflag=direct status=none
"$BIN" attach "$A" >/dev/null

now() { date +%s.%N; }
rate() { awk -v mib="$1" -v t0="$2" -v t1="$3" 'BEGIN { printf "%.1f", mib / (t1 - t0) }'; }
fio_image() {
	local img
	ID=$("$BIN" snapshot create --allow-tmpfs --storage "$WORK" --limit 64M "$A")
	"$BIN" snapshot take --id "$ID" >/dev/null
	img=$(image_of "$A")
	wait_dev "$img"
	# fio separates file names with colons.
	LD_PRELOAD=$SHIM fio --name=read --filename="${img//:/\\:}" --rw=read --bs=1M --iodepth=4 \
		--ioengine=io_uring --direct=1 --thread --size="$1"M --output-format=json \
		--output="$WORK/fio.json"
	"$BIN" snapshot destroy --id "$ID" >/dev/null
	ID=
	python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print("%.1f" % (j["jobs"][0]["read"]["bw"] / 1024))' \
		"$WORK/fio.json"
}
backup_full() {
	local t0 t1
	rm -rf "$WORK/repo"
	t0=$(now)
	"$BIN" -q backup --full --allow-tmpfs --storage "$WORK" --repo "$WORK/repo" "$A" >/dev/null
	t1=$(now)
	rate "$SIZE" "$t0" "$t1"
}

: >"$WORK/ratios"
for i in $(seq "$REPS"); do
	if [ $((i % 2)) -eq 1 ]; then
		f=$(fio_image "$SIZE")
		b=$(backup_full)
	else
		b=$(backup_full)
		f=$(fio_image "$SIZE")
	fi
	echo "pair $i: full backup $b MiB/s, fio read of the image $f MiB/s"
	awk -v b="$b" -v f="$f" 'BEGIN { printf "%.3f\n", b / f }' >>"$WORK/ratios"
done
sort -n "$WORK/ratios" | awk '{ r[NR] = $1 } END {
	printf "full backup / fio read: median %.2f [%.2f-%.2f] over %d pairs (target >= 0.9)\n",
		r[int((NR + 1) / 2)], r[1], r[NR], NR }'

# 1 % of the tracking blocks, written at random places, then an incremental.
BS=$(cbt_field "$A" block_size)
COUNT=$(cbt_field "$A" block_count)
N=$((COUNT / 100 > 0 ? COUNT / 100 : 1))
for b in $(shuf -i 0-$((COUNT - 1)) -n "$N"); do
	dd if=/dev/urandom of="$A" bs="$BS" seek="$b" count=1 oflag=direct status=none
done
t0=$(now)
"$BIN" -q backup --allow-tmpfs --storage "$WORK" --repo "$WORK/repo" "$A" >/dev/null
t1=$(now)
inc=$(rate $((N * BS / 1048576)) "$t0" "$t1")
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
f=$(fio_image $((N * BS / 1048576 > 0 ? N * BS / 1048576 : 1)))
echo "1 % incremental: $N blocks of $BS bytes in $secs s ($inc MiB/s of changed data; fio reads the same amount sequentially at $f MiB/s)"
"$BIN" list --repo "$WORK/repo"
