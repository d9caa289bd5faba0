#!/bin/bash
# Guest side of ci/bench.sh snapshot: the cost of a held snapshot on the
# origin's write path, against the raw device in the same boot.
#
# usage (as root, in a guest running the fork, BLKSNAP_BIN set):
#   vm/bench/snapshot-fio.sh [REPS] [SIZE_MIB]      defaults: 3 pairs, 256 MiB
#
# The origin is a memory-backed null_blk device (configfs), the difference
# storage an O_TMPFILE file on tmpfs (so neither device is the noise). fio
# writes the whole device sequentially, 1 MiB blocks, iodepth 4, io_uring,
# direct. Three workloads, each a pair whose order alternates (ABAB...):
#   first:     writes to a device whose snapshot was just taken (every chunk
#              is read and preserved first) / the same writes, no filter;
#   overwrite: the same writes again while the snapshot is held (every chunk
#              is preserved already) / no filter;
#   cbt:       the blksnap filter attached, no snapshot / no filter;
#   dmsnap:    first writes through dm-snapshot (snapshot-origin over the
#              device, a transient snapshot with the chunk size of blksnap,
#              its exception store on a second memory-backed null_blk) / no
#              filter;
#   thin:      first writes to a dm-thin volume just snapshotted (create_snap;
#              pool block size = chunk size, data and metadata on null_blk)
#              / no filter (the raw device).
# Each line gives the MiB/s of both runs of a pair; the summary gives the
# median of the per-pair ratios and their spread. Targets of the design:
# first >= 0.45 (one chunk read and one chunk write for each write),
# overwrite >= 0.95. The peers have no target: they show where blksnap
# stands.
set -euo pipefail
REPS=${1:-3}
SIZE=${2:-256}
. "$(dirname "$0")/lib.sh"
STORE=$(mktemp -d /tmp/snapbench.XXXXXX)
mount -t tmpfs -o size=$((SIZE + 64))M snapbench "$STORE"

ID=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	"$BIN" detach "${A:-/nonexistent}" >/dev/null 2>&1 || true
	for t in bench-snap bench-origin bench-thin bench-pool; do dmsetup remove "$t" >/dev/null 2>&1 || true; done
	for n in snapbench snapcow thindata thinmeta; do
		echo 0 >"$CFG/$n/power" 2>/dev/null || true
		rmdir "$CFG/$n" 2>/dev/null || true
	done
	umount "$STORE" 2>/dev/null || true
}
trap cleanup EXIT
A=$(make_nullb snapbench "$SIZE" 1)
COW=$(make_nullb snapcow $((SIZE + 32)) 1)
TDATA=$(make_nullb thindata $((2 * SIZE + 32)) 1)
TMETA=$(make_nullb thinmeta 64 1)
SECTORS=$((SIZE * 2048))
# The chunk size blksnap picks for the device, in sectors (for the peers).
CHUNK=$((1 << ($(dmesg | sed -n 's/.*chunk parameters: Params { min_shift: \([0-9]*\).*/\1/p' |
	tail -1) - 9)))

# mibs [DEV]: one fio pass over the whole device (default $A); prints the
# write MiB/s.
mibs() {
	LD_PRELOAD=$SHIM fio --name=snap --filename="${1:-$A}" --rw=write --bs=1M --iodepth=4 \
		--ioengine=io_uring --direct=1 --numjobs=1 --thread --size="${SIZE}M" \
		--output-format=json |
		python3 -c 'import json, sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["bw"] / 1024, 1))'
}
no_filter() {
	[ -z "$(cat "/sys/block/$(basename "$A")/filter")" ] || fail "$A has a filter"
	mibs
}
snapshot_on() {
	"$BIN" attach "$A" >/dev/null
	ID=$("$BIN" snapshot create --storage "$STORE" --limit $((SIZE + 32))M "$A")
	"$BIN" snapshot take --id "$ID" >/dev/null
}
snapshot_off() {
	"$BIN" snapshot destroy --id "$ID" >/dev/null
	ID=
	"$BIN" detach "$A" >/dev/null
}
first() {
	snapshot_on
	mibs
	snapshot_off
}
overwrite() {
	snapshot_on
	mibs >/dev/null
	mibs
	local info
	info=$("$BIN" snapshot info "$A")
	grep -q "error_code: 0" <<<"$info" || fail "the snapshot broke: $info"
	snapshot_off
}
cbt() {
	"$BIN" attach "$A" >/dev/null
	mibs
	"$BIN" detach "$A" >/dev/null
}
dmsnap() {
	dmsetup create bench-origin --table "0 $SECTORS snapshot-origin $A"
	dmsetup create bench-snap --table "0 $SECTORS snapshot $A $COW N $CHUNK"
	mibs /dev/mapper/bench-origin
	dmsetup remove bench-snap
	dmsetup remove bench-origin
}
thin() {
	dd if=/dev/zero of="$TMETA" bs=4096 count=1 oflag=direct status=none
	dmsetup create bench-pool --table \
		"0 $(blockdev --getsz "$TDATA") thin-pool $TMETA $TDATA $CHUNK 0 1 skip_block_zeroing"
	dmsetup message bench-pool 0 "create_thin 0"
	# By number: without udev the /dev/mapper node may not be there yet.
	local pool
	pool=$(dmsetup info -c --noheadings -o major,minor bench-pool | tr -d ' ')
	dmsetup create bench-thin --table "0 $SECTORS thin $pool 0"
	mibs /dev/mapper/bench-thin >/dev/null
	dmsetup suspend bench-thin
	dmsetup message bench-pool 0 "create_snap 1 0"
	dmsetup resume bench-thin
	mibs /dev/mapper/bench-thin
	dmsetup remove bench-thin
	dmsetup remove bench-pool
}

# Fill the device once, so that every run reads and writes real data.
mibs >/dev/null
echo "snapshot-fio: $REPS pairs per workload, fio write 1M iodepth 4 io_uring over $SIZE MiB of $A (null_blk, memory_backed=1), storage on tmpfs, chunks of $CHUNK sectors"
results=$(mktemp)
for kind in first overwrite cbt dmsnap thin; do
	for i in $(seq "$REPS"); do
		if [ $((i % 2)) -eq 1 ]; then
			base=$(no_filter)
			with=$($kind)
		else
			with=$($kind)
			base=$(no_filter)
		fi
		printf '%-9s pair %d: raw %8.1f MiB/s, with %8.1f MiB/s, ratio %.3f\n' "$kind" "$i" \
			"$base" "$with" "$(python3 -c "print($with / $base)")"
		echo "$kind $base $with" >>"$results"
	done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
targets = {"first": 0.45, "overwrite": 0.95, "cbt": 0.97, "dmsnap": None, "thin": None}
for kind, target in targets.items():
    r = [(float(b), float(w)) for k, b, w in rows if k == kind]
    ratios = [w / b for b, w in r]
    med = statistics.median(ratios)
    verdict = "peer" if target is None else (
        f"target >= {target}: {'MET' if med >= target else 'NOT MET'}")
    print(f"{kind}: median ratio {med:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}, "
          f"{len(r)} pairs), {verdict}")
print("note: guests under TCG give noisy numbers; the median of alternating pairs is the figure to read")
PY
rm -f "$results"
