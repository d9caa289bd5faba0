#!/usr/bin/env bash
# Guest-side test of the memory bound of copy-on-write: 4 KiB random writes
# at iodepth 64 against an origin whose difference storage is slow (a
# dm-delay device, 20 ms per write). At most chunk_maximum_in_queue chunks
# of the device are in memory (the kernel logs the most there were at
# destroy), the origin slows down to the storage's pace instead of the
# snapshot growing memory, and the image still holds the take. Then the
# storage is suspended under the same load: destroy returns, the held
# writes go on, and no task hangs.
# vm: --disk 128M --disk 160M --memory 1G --timeout 600
# vm-requires: CONFIG_BLKSNAP CONFIG_DM_DELAY
# vm-arch: x86_64 (the guest compiles fio's shared-memory shim with the host's compiler)
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
read -r -a disks <<<"${SCRATCH_DISKS:-}"
A=${disks[0]:-}
S=${disks[1]:-}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -b "$A" ] && [ -b "$S" ] || fail "needs two scratch block devices ('$A' '$S')"
need_tool
command -v fio >/dev/null || fail "no fio"
# fio needs SysV shared memory, which the kernel lacks: the benchmark's shim.
SHIM=$(mktemp -d)/shm-shim.so
cc -shared -fPIC -O2 -o "$SHIM" "$(dirname "$0")/../bench/shm-shim.c" || fail "cannot build $SHIM"
WORK=$(mktemp -d /tmp/snapmem.XXXXXX)
mount -t tmpfs -o size=200M snapmem "$WORK"
ID= FIO=
cleanup() {
	[ -z "$FIO" ] || kill "$FIO" 2>/dev/null || true
	dmsetup resume slow 2>/dev/null || true
	[ -z "$ID" ] || "$BIN" snapshot destroy --id "$ID" >/dev/null 2>&1 || true
	"$BIN" detach "$A" >/dev/null 2>&1 || true
	dmsetup remove slow 2>/dev/null || true
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
LIMIT=$(cat /sys/module/blksnap/parameters/chunk_maximum_in_queue 2>/dev/null || echo 16)
MM=$(lsblk -dno MAJ:MIN "$A" | tr -d ' ')
IMG=/dev/blksnap-image_$MM

dmsetup create slow --table "0 $(blockdev --getsz "$S") delay $S 0 0 $S 0 20"
udevadm settle 2>/dev/null || true
"$BIN" detach "$A" >/dev/null 2>&1 || true
bs attach "$A" >/dev/null
dd if=/dev/urandom of="$A" bs=1M count=128 oflag=direct status=none
cp "$A" "$WORK/at-take"

randwrite() {
	LD_PRELOAD=$SHIM fio --name=storm --filename="$A" --rw=randwrite --bs=4k --iodepth=64 --ioengine=libaio \
		--direct=1 --thread --time_based --runtime="$1" --randrepeat=0 --output="$WORK/fio.txt" "${@:2}"
}

step "a write storm against a slow storage"
ID=$("$BIN" snapshot create --storage /dev/mapper/slow --limit 150M "$A")
bs snapshot take --id "$ID" >/dev/null
free_before=$(awk '/MemFree/ { print $2 }' /proc/meminfo)
randwrite 20 &
FIO=$!
min_free=$free_before
for _ in $(seq 18); do
	sleep 1
	f=$(awk '/MemFree/ { print $2 }' /proc/meminfo)
	[ "$f" -ge "$min_free" ] || min_free=$f
done
wait "$FIO"
FIO=
grep -E "write:|IOPS" "$WORK/fio.txt" | head -2
echo "MemFree: $free_before KiB before, $min_free KiB at the lowest"
for _ in $(seq 50); do [ -b "$IMG" ] && break; sleep 0.1; done
cmp "$IMG" "$WORK/at-take" || fail "the image differs from the take"
grep -q "error_code: 0" <<<"$("$BIN" snapshot info "$A")" || fail "the snapshot broke"
bs snapshot destroy --id "$ID" >/dev/null
ID=
line=$(dmesg | grep "$MM: snapshot destroyed" | tail -1)
echo "$line"
peak=$(sed -n 's/.*at most \([0-9]*\) chunks in memory (bound \([0-9]*\)).*/\1/p' <<<"$line")
bound=$(sed -n 's/.*at most \([0-9]*\) chunks in memory (bound \([0-9]*\)).*/\2/p' <<<"$line")
[ -n "$peak" ] && [ "$bound" -eq "$LIMIT" ] || fail "no memory figures in the destroy line: $line"
[ "$peak" -le "$bound" ] || fail "$peak chunks were in memory, over the bound of $bound"
[ "$peak" -ge 2 ] || fail "only $peak chunks were ever in memory: the storm did not load the store"

step "destroy returns while the storage is suspended under the storm"
cp "$A" "$WORK/at-take"
ID=$("$BIN" snapshot create --storage /dev/mapper/slow --limit 150M "$A")
bs snapshot take --id "$ID" >/dev/null
randwrite 15 &
FIO=$!
sleep 3
dmsetup suspend slow
sleep 2
t0=$(date +%s)
timeout 60 "$BIN" snapshot destroy --id "$ID" >/dev/null || fail "destroy did not return with the storage suspended"
echo "destroy took $(($(date +%s) - t0)) s with the storage suspended"
ID=
dmsetup resume slow
wait "$FIO" || fail "fio failed"
FIO=
if dmesg | grep -q "blocked for more than"; then fail "a task hung"; fi
echo "snapshot-memory: all checks passed (peak $peak of $bound chunks)"
