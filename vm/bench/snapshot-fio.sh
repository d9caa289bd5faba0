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
#   cbt:       the blksnap filter attached, no snapshot / no filter.
# Each line gives the MiB/s of both runs of a pair; the summary gives the
# median of the per-pair ratios and their spread. Targets of the design:
# first >= 0.45 (one chunk read and one chunk write for each write),
# overwrite >= 0.95.
set -euo pipefail
REPS=${1:-3}
SIZE=${2:-256}
BIN=${BLKSNAP_BIN:-blksnap}
CFG=/sys/kernel/config/nullb

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
command -v fio >/dev/null || fail "fio is missing"
SHIM=$(mktemp -d)/shm-shim.so
cc -shared -fPIC -O2 -o "$SHIM" "$(dirname "$0")/shm-shim.c" || fail "cannot build $SHIM"
[ -d "$CFG" ] || mount -t configfs none /sys/kernel/config
[ -d "$CFG" ] || fail "no null_blk configfs ($CFG)"
STORE=$(mktemp -d /tmp/snapbench.XXXXXX)
mount -t tmpfs -o size=$((SIZE + 64))M snapbench "$STORE"

c=$CFG/snapbench
mkdir "$c"
echo "$SIZE" >"$c/size"
echo 1 >"$c/memory_backed"
echo 1 >"$c/power"
A=
for name in snapbench "nullb$(cat "$c/index")"; do [ -b "/dev/$name" ] && A=/dev/$name; done
[ -n "$A" ] || fail "no disk for null_blk snapbench"
ID=
cleanup() {
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	"$BIN" detach "$A" >/dev/null 2>&1 || true
	echo 0 >"$c/power" 2>/dev/null || true
	rmdir "$c" 2>/dev/null || true
	umount "$STORE" 2>/dev/null || true
}
trap cleanup EXIT

# mibs: one fio pass over the whole device; prints the write MiB/s.
mibs() {
	LD_PRELOAD=$SHIM fio --name=snap --filename="$A" --rw=write --bs=1M --iodepth=4 \
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

# Fill the device once, so that every run reads and writes real data.
mibs >/dev/null
echo "snapshot-fio: $REPS pairs per workload, fio write 1M iodepth 4 io_uring over $SIZE MiB of $A (null_blk, memory_backed=1), storage on tmpfs"
results=$(mktemp)
for kind in first overwrite cbt; do
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
targets = {"first": 0.45, "overwrite": 0.95, "cbt": 0.97}
for kind, target in targets.items():
    r = [(float(b), float(w)) for k, b, w in rows if k == kind]
    ratios = [w / b for b, w in r]
    med = statistics.median(ratios)
    print(f"{kind}: median ratio {med:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}, "
          f"{len(r)} pairs), target >= {target}: {'MET' if med >= target else 'NOT MET'}")
print("note: guests under TCG give noisy numbers; the median of alternating pairs is the figure to read")
PY
rm -f "$results"
