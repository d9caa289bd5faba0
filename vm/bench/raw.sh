#!/bin/bash
# Guest side of ci/bench.sh suite --pristine: the raw device's throughput on
# whatever kernel this is (the fork, or the pristine base built with the
# same config), for comparing kernels booted one after the other. Needs no
# blksnap.
#
# usage (as root, in a guest, VM_OUT set):
#   vm/bench/raw.sh TAG [RUNS] [RUNTIME_SEC]     defaults: 5 runs of 3 s
#
# fio on a null_blk device that keeps no data (memory_backed=0: the block
# layer is what is measured): 4 KiB random writes at iodepth 32 and 1 MiB
# sequential writes at iodepth 4, io_uring, direct; RUNS runs of each,
# interleaved. Appends one JSON line per workload, with the median, to
# $VM_OUT/raw.jsonl.
set -euo pipefail
TAG=${1:?usage: $0 TAG [RUNS] [RUNTIME_SEC]}
RUNS=${2:-5}
RUNTIME=${3:-3}
# shellcheck source=vm/bench/lib.sh
. "$(dirname "$0")/lib.sh"
[ -d "${VM_OUT:-}" ] || fail "VM_OUT is not a directory"
cleanup() {
	echo 0 >"$CFG/sb-raw/power" 2>/dev/null || true
	rmdir "$CFG/sb-raw" 2>/dev/null || true
}
trap cleanup EXIT
D=$(make_nullb sb-raw 4096 0)

# mibs RW BS IODEPTH: one time-based fio run on D; prints MiB/s.
mibs() {
	LD_PRELOAD=$SHIM fio --name=raw --filename="$D" --rw="$1" --bs="$2" --iodepth="$3" \
		--ioengine=io_uring --direct=1 --numjobs=1 --thread --time_based --runtime="$RUNTIME" \
		--ramp_time=1 --randrepeat=0 --output-format=json |
		python3 -c 'import json, sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["bw"] / 1024, 2))'
}
rn=() sq=()
for i in $(seq "$RUNS"); do
	rn+=("$(mibs randwrite 4k 32)")
	sq+=("$(mibs write 1M 4)")
	echo "raw $TAG run $i: 4K random writes ${rn[-1]} MiB/s, 1M sequential writes ${sq[-1]} MiB/s"
done
python3 - "$TAG" "$(uname -r)" "${rn[*]}" "${sq[*]}" >>"$VM_OUT/raw.jsonl" <<'PY'
import json, statistics, sys
tag, kernel, rand, seq = sys.argv[1:]
for wl, runs in (("rand", rand), ("seq", seq)):
    v = [float(x) for x in runs.split()]
    print(json.dumps({"tag": tag, "kernel": kernel, "workload": wl,
                      "median": statistics.median(v), "runs": v}))
PY
