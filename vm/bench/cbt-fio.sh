#!/bin/bash
# Guest side of ci/bench.sh: the cost of change tracking on the write path.
#
# usage (as root, in a guest running the fork, BLKSNAP_BIN set):
#   vm/bench/cbt-fio.sh [REPS] [RUNTIME_SEC]      defaults: 7 runs of 3 s
#
# fio, 4 KiB random writes, iodepth 32, io_uring, direct, one job, on null_blk
# devices made through configfs with memory_backed=0 (no data kept: what is
# measured is the block layer and the filter). Two comparisons, each run in
# pairs whose order alternates (ABBA) so that drift over the boot cancels:
#   filter:  device A with blksnap attached (CBT only) / A with no filter
#            anywhere
#   key:     A without a filter while device B has one (the static key is
#            on, A's bios go through the bd_filter check) / no filter
#            anywhere (the key is off)
# Each line gives the IOPS of both runs of a pair; the summary gives the
# median of the per-pair ratios, and whether the filter ratio meets 0.97.
set -euo pipefail
REPS=${1:-7}
RUNTIME=${2:-3}
TARGET=0.97
. "$(dirname "$0")/lib.sh"

cleanup() {
	"$BIN" detach "${A:-/nonexistent}" >/dev/null 2>&1 || true
	"$BIN" detach "${B:-/nonexistent}" >/dev/null 2>&1 || true
	rmdir "$CFG/bench-a" "$CFG/bench-b" 2>/dev/null || true
}
trap cleanup EXIT
A=$(make_nullb bench-a 4096 0)
B=$(make_nullb bench-b 4096 0)

# iops DEV: one fio run; prints the write IOPS.
iops() {
	LD_PRELOAD=$SHIM fio --name=cbt --filename="$1" --rw=randwrite --bs=4k --iodepth=32 \
		--ioengine=io_uring --direct=1 --numjobs=1 --thread --time_based --runtime="$RUNTIME" \
		--ramp_time=1 --randrepeat=0 --output-format=json |
		python3 -c 'import json, sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["iops"]))'
}
attach() { "$BIN" attach "$1" | grep -qx "$1: attached" || fail "attach $1"; }
detach() { "$BIN" detach "$1" >/dev/null || fail "detach $1"; }
filters_off() {
	for d in "$A" "$B"; do
		[ -z "$(cat "/sys/block/$(basename "$d")/filter")" ] || fail "$d has a filter"
	done
}

# One measurement of each kind; "with" sets the filter state up and prints
# the IOPS, the baseline runs with no filter anywhere.
with_filter() {
	attach "$A"
	iops "$A"
	detach "$A"
}
with_key() {
	attach "$B"
	iops "$A"
	detach "$B"
}
baseline() {
	filters_off
	iops "$A"
}

echo "cbt-fio: $REPS pairs of ${RUNTIME}s runs per comparison, fio randwrite 4k iodepth 32 io_uring on $A (null_blk, memory_backed=0)"
results=$(mktemp)
for kind in filter key; do
	for i in $(seq "$REPS"); do
		if [ $((i % 2)) -eq 1 ]; then
			base=$(baseline)
			with=$(with_$kind)
		else
			with=$(with_$kind)
			base=$(baseline)
		fi
		printf '%-6s pair %2d: baseline %8d IOPS, %-9s %8d IOPS, ratio %.3f\n' "$kind" "$i" "$base" \
			"$([ "$kind" = filter ] && echo filtered || echo key-on)" "$with" \
			"$(python3 -c "print($with / $base)")"
		echo "$kind $base $with" >>"$results"
	done
done

python3 - "$results" "$TARGET" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
target = float(sys.argv[2])
for kind, label in (("filter", "filtered/baseline (blksnap attached to the device)"),
                    ("key", "key-on/key-off (filter on another device only)")):
    r = [(int(b), int(w)) for k, b, w in rows if k == kind]
    ratios = [w / b for b, w in r]
    print(f"{kind}: median IOPS baseline {statistics.median(b for b, _ in r):.0f}, "
          f"{'filtered' if kind == 'filter' else 'key-on'} {statistics.median(w for _, w in r):.0f}")
    print(f"{kind}: {label}: median ratio {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(r)} pairs)")
    if kind == "filter":
        ok = statistics.median(ratios) >= target
        print(f"filter: target >= {target}: {'MET' if ok else 'NOT MET'}")
print("note: guests under TCG give noisy numbers; the median of alternating pairs is the figure to read")
PY
rm -f "$results"
