#!/bin/bash
# Guest side of ci/bench.sh suite|smoke: blksnap beside the in-tree peers
# (dm-snapshot, dm-thin, dm-era), every throughput a ratio against the raw
# device measured in the same boot, every figure written as JSON to $VM_OUT.
#
# usage (as root, in a guest running the fork, BLKSNAP_BIN and VM_OUT set):
#   vm/bench/suite.sh [REPS] [SIZE_MIB] [full|smoke]    defaults: 5 256 full
#
# Devices are memory-backed null_blk (configfs), so that no device is the
# noise. The origin is SIZE_MIB; chunk size = the one blksnap picks for it.
# Configurations, each paired with "raw" (the origin, no filter, no dm):
#   cbt         blksnap attached, no snapshot
#   snap-tmpfs  blksnap with a held snapshot, storage an O_TMPFILE on tmpfs
#   snap-ext4   the same, storage an O_TMPFILE on ext4 on another null_blk
#   dm-snap     snapshot-origin + a transient snapshot (same chunk size),
#               exception store on another null_blk
#   dm-thin     a thin volume (filled) just snapshotted with create_snap,
#               pool block size = chunk size
#   dm-era      era over the origin, era block = blksnap's tracking block
#               (the CBT-only peer)
# Workloads (fio, io_uring, direct, over the whole origin):
#   seq      sequential first writes, 1 MiB, iodepth 4, right after the
#            take (attach, era creation)
#   rand     4 KiB random first writes, iodepth 32, a quarter of the device
#   over     the seq pass again: every chunk is copied already
#   read     sequential read, 1 MiB, iodepth 4, of the snapshot (image, dm
#            snapshot, thin snapshot) with the origin untouched, or of the
#            origin for cbt and dm-era; raw: the origin
#   readcow  the same after the whole origin was overwritten (the snapshot
#            is read from its storage); snapshots only
# Each (configuration, workload) runs REPS pairs whose order alternates
# (ABAB...): the figure is the median of the per-pair ratios, with min and
# max, so that TCG noise shows in the result.
# Then: the write stall of a take (longest 4 KiB qd1 write latency across
# the take, against the same run without a take; raw device and ext4),
# the take time for 1, 2 and 4 devices, and the kernel memory of tracking
# and of a held snapshot for 1 TiB devices (expected from the structures,
# measured as /proc/meminfo deltas).
#
# Output: $VM_OUT/records.jsonl (one line per measurement) and
# $VM_OUT/suite.json (summary, vm/bench/report.py summarize).
set -euo pipefail
REPS=${1:-5}
SIZE=${2:-256}
MODE=${3:-full}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=vm/bench/lib.sh
. "$HERE/lib.sh"
[ -d "${VM_OUT:-}" ] || fail "VM_OUT is not a directory"
case $MODE in
full) STALL_REPS=$REPS STALL_SEC=4 TAKE_REPS=$REPS TIB_DEVS=4 ;;
smoke) STALL_REPS=1 STALL_SEC=2 TAKE_REPS=1 TIB_DEVS=2 ;;
*) fail "unknown mode $MODE" ;;
esac
CONFIGS="cbt snap-tmpfs snap-ext4 dm-snap dm-thin dm-era"
WORKLOADS="seq rand over read readcow"
REC=$VM_OUT/records.jsonl
: >"$REC"
WORK=$(mktemp -d /tmp/suite.XXXXXX)
DMERR=$WORK/dmsetup.err
STORE=$WORK/tmpfs
FSMNT=$WORK/ext4
MNT=$WORK/fs
mkdir -p "$STORE" "$FSMNT" "$MNT"
tools_in_memory "$WORK/tools" fio dmsetup mkfs.ext4 lsblk blockdev dd sed tail cat cut tr grep \
	mount umount sleep dmesg sync
NULLBS="sb-origin sb-cow sb-tdata sb-tmeta sb-emeta sb-fs sb-tib1 sb-tib2 sb-tib3 sb-tib4
	sb-tiny1 sb-tiny2 sb-tiny3 sb-tiny4 sb-warm"
DMS="suite-snap suite-origin suite-thinsnap suite-thin suite-pool suite-era"

cleanup() {
	local id d
	for id in $("$BIN" snapshot collect 2>/dev/null); do
		"$BIN" snapshot destroy --id "$id" >/dev/null 2>&1 || true
	done
	umount "$MNT" 2>/dev/null || true
	for d in $DMS; do dmsetup remove "$d" >/dev/null 2>&1 || true; done
	for d in /sys/block/*/filter; do
		[ -n "$(cat "$d" 2>/dev/null)" ] || continue
		d=${d%/filter}
		"$BIN" detach "/dev/${d##*/}" >/dev/null 2>&1 || true
	done
	umount "$STORE" "$FSMNT" 2>/dev/null || true
	for d in $NULLBS; do
		[ -d "$CFG/$d" ] || continue
		echo 0 >"$CFG/$d/power" 2>/dev/null || true
		rmdir "$CFG/$d" 2>/dev/null || true
	done
	# Lazily: the umount running comes from there.
	umount -l "$WORK/tools" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

# dm ARGS...: dmsetup, its stderr (libdevmapper's complaint about the
# missing SysV semaphores on every call) shown only when it fails. After a
# create, waits for /dev/mapper/NAME: udev runs in the guest but dmsetup
# cannot synchronise with it (no semaphores), so the node comes late. After a
# create or a remove, waits for udev: a remove's event handled late took away
# the node of the device created next under the same name (mount: "Can't
# lookup blockdev"). A remove retries while the device is busy (udev's
# probe of a device just made can still hold it open: "Device or resource
# busy" once in a suite run).
dm() {
	local n=0
	[ "$1" != remove ] || set -- remove --retry "${@:2}"
	dmsetup "$@" 2>"$DMERR" || {
		cat "$DMERR" >&2
		return 1
	}
	case $1 in
	create | remove) udevadm settle --timeout=10 2>/dev/null || true ;;
	esac
	[ "$1" = create ] || return 0
	while [ ! -b "/dev/mapper/$2" ] && [ $n -lt 100 ]; do
		sleep 0.05
		n=$((n + 1))
	done
	[ -b "/dev/mapper/$2" ] || dmsetup mknodes "$2" 2>"$DMERR" || true
	[ -b "/dev/mapper/$2" ] || fail "no /dev/mapper/$2"
}
# rec JSON: one record.
rec() { printf '%s\n' "$1" >>"$REC"; }
# Arithmetic in bash, without starting a program (each start costs a lot
# in a TCG guest): fixed point from integers.
# fixed N DIV DIGITS: N / DIV with DIGITS decimals.
fixed() {
	local scale=$((10 ** $3)) q
	q=$(($1 * scale / $2))
	printf '%d.%0*d' $((q / scale)) "$3" $((q % scale))
}
# now_us: the clock in microseconds.
now_us() { echo "${EPOCHREALTIME/./}"; }
attach() { "$BIN" attach "$1" >/dev/null || fail "attach $1"; }
detach() { "$BIN" detach "$1" >/dev/null || fail "detach $1"; }
# held_us: the last take's "writes held" and "with freeze and thaw" times
# from the kernel log, in microseconds ("held freeze").
held_us() {
	dmesg | sed -n 's/.*taken on [0-9]* devices, writes held \([0-9]*\) us (with freeze and thaw \([0-9]*\) us).*/\1 \2/p' |
		tail -1
}

A=$(make_nullb sb-origin "$SIZE" 1)
COW=$(make_nullb sb-cow $((SIZE + 32)) 1)
TDATA=$(make_nullb sb-tdata $((2 * SIZE + 64)) 1)
TMETA=$(make_nullb sb-tmeta 64 1)
EMETA=$(make_nullb sb-emeta 64 1)
# The storage file grows up to its limit (SIZE + 32 MiB). The device keeps
# in memory every block ever written, and the files of successive runs may
# land on other blocks: twice the limit and some room bound it (at 2 GiB it
# filled the guest's memory over a full run and the OOM killer took fio).
FSDEV=$(make_nullb sb-fs $((2 * SIZE + 256)) 1)
SECTORS=$((SIZE * 2048))
mount -t tmpfs -o size=$((SIZE + 64))M suite "$STORE"
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1,nodiscard "$FSDEV"
mount -o noatime "$FSDEV" "$FSMNT"

# The chunk parameters from the boot log (read now: the log may wrap).
read -r CMIN CMAX_COUNT CMAX < <(dmesg | sed -n \
	's/.*chunk parameters: Params { min_shift: \([0-9]*\), max_count: \([0-9]*\), max_shift: \([0-9]*\).*/\1 \2 \3/p' |
	tail -1)
[ -n "${CMAX:-}" ] || fail "no chunk parameters in the kernel log"
# chunk_shift BYTES: log2 of the chunk size for a device of BYTES, as
# chunk::Geometry::new picks it (512-byte logical blocks).
chunk_shift() {
	local s=$CMIN
	while [ "$s" -lt "$CMAX" ] && [ $((($1 + (1 << s) - 1) >> s)) -gt "$CMAX_COUNT" ]; do
		s=$((s + 1))
	done
	echo "$s"
}
# The chunk size blksnap picks for the origin (sectors), for the peers; the
# tracking block size, for dm-era.
CHUNK=$((1 << ($(chunk_shift $((SIZE << 20))) - 9)))
attach "$A"
BLOCK=$(dmesg | sed -n 's/.* tracking blocks of \([0-9]*\) bytes.*/\1/p' | tail -1)
detach "$A"
ERA_BLOCK=$((BLOCK / 512))
if [ "$CHUNK" -le 0 ] || [ "$ERA_BLOCK" -le 0 ]; then
	fail "no chunk or block size in the kernel log"
fi

# terse_sum FIELD...: the sum of the fields (0-based, decimals dropped) of
# the terse (version 3) line of fio's output on stdin; other lines (fio's
# warnings) are skipped.
terse_sum() {
	local line f i sum=0
	while IFS= read -r line; do
		[[ $line == "3;"* ]] || continue
		IFS=';' read -r -a f <<<"$line"
		for i in "$@"; do
			sum=$((sum + ${f[i]%.*}))
		done
		echo "$sum"
		return 0
	done
	fail "no terse line in fio's output"
}
# fio_kibs RW BS IODEPTH DEV [FIO_ARGS...]: one fio job over the first
# SIZE MiB of DEV; prints its throughput in KiB/s (fields 7 and 48 of the
# terse output: read and write KiB/s). A colon in a file name is escaped
# (fio takes it for a separator).
fio_kibs() {
	local rw=$1 bs=$2 qd=$3 dev=$4
	shift 4
	LD_PRELOAD=$SHIM fio --name=suite --filename="${dev//:/\\:}" --rw="$rw" --bs="$bs" \
		--iodepth="$qd" --ioengine=io_uring --direct=1 --numjobs=1 --thread --size="${SIZE}M" \
		"$@" --minimal | terse_sum 6 47
}
# load WORKLOAD DEV: one fio pass of the workload; prints KiB/s.
load() {
	case $1 in
	seq | over) fio_kibs write 1M 4 "$2" ;;
	rand) fio_kibs randwrite 4k 32 "$2" --io_size=$((SIZE / 4))M --randrepeat=0 ;;
	read | readcow) fio_kibs read 1M 4 "$2" ;;
	*) fail "unknown workload $1" ;;
	esac
}

# Configurations: up_X sets X up and sets W (the device written) and R (the
# device read: the snapshot where there is one); down_X undoes it.
up_raw() {
	[ -z "$(cat "/sys/block/$(basename "$A")/filter")" ] || fail "$A has a filter"
	W=$A R=$A
}
down_raw() { :; }
up_cbt() {
	attach "$A"
	W=$A R=$A
}
down_cbt() { detach "$A"; }
ID=
snap_up() {
	attach "$A"
	ID=$("$BIN" snapshot create --storage "$1" --limit $((SIZE + 32))M "$A")
	"$BIN" snapshot take --id "$ID" >/dev/null
	W=$A R=$(image_of "$A")
}
snap_down() {
	local info
	info=$("$BIN" snapshot info "$A")
	grep -q "error_code: 0" <<<"$info" || fail "the snapshot broke: $info"
	"$BIN" snapshot destroy --id "$ID" >/dev/null
	ID=
	detach "$A"
}
up_snap_tmpfs() { snap_up "$STORE"; }
down_snap_tmpfs() { snap_down; }
up_snap_ext4() { snap_up "$FSMNT"; }
down_snap_ext4() { snap_down; }
up_dm_snap() {
	dm create suite-origin --table "0 $SECTORS snapshot-origin $A"
	dm create suite-snap --table "0 $SECTORS snapshot $A $COW N $CHUNK"
	W=/dev/mapper/suite-origin R=/dev/mapper/suite-snap
}
down_dm_snap() {
	local status
	status=$(dm status suite-snap)
	case $status in *Invalid* | *Overflow*) fail "dm-snapshot broke: $status" ;; esac
	dm remove suite-snap
	dm remove suite-origin
}
# The pool, by number: without udev the /dev/mapper node may not be there
# yet when the thin table is loaded.
pool_dev() { dm info -c --noheadings -o major,minor suite-pool | tr -d ' '; }
up_dm_thin() {
	dd if=/dev/zero of="$TMETA" bs=4096 count=1 oflag=direct status=none
	dm create suite-pool --table \
		"0 $(blockdev --getsz "$TDATA") thin-pool $TMETA $TDATA $CHUNK 0 1 skip_block_zeroing"
	dm message suite-pool 0 "create_thin 0"
	dm create suite-thin --table "0 $SECTORS thin $(pool_dev) 0"
	# Data in every block, shared with the snapshot.
	load seq /dev/mapper/suite-thin >/dev/null
	thin_take
	dm create suite-thinsnap --table "0 $SECTORS thin $(pool_dev) 1"
	W=/dev/mapper/suite-thin R=/dev/mapper/suite-thinsnap
}
thin_take() {
	dm suspend suite-thin
	dm message suite-pool 0 "create_snap 1 0"
	dm resume suite-thin
}
down_dm_thin() {
	dm remove suite-thinsnap 2>/dev/null || true
	dm remove suite-thin
	dm remove suite-pool
}
up_dm_era() {
	dd if=/dev/zero of="$EMETA" bs=4096 count=1 oflag=direct status=none
	dm create suite-era --table "0 $SECTORS era $EMETA $A $ERA_BLOCK"
	W=/dev/mapper/suite-era R=/dev/mapper/suite-era
}
down_dm_era() { dm remove suite-era; }

# one CONFIG WORKLOAD: sets the configuration up, runs the workload, tears
# it down; leaves KiB/s in VAL (raw runs the plain workload: its overwrite
# is a write, its readcow a read).
VAL=
one() {
	local cfg=${1//-/_} wl=$2
	"up_$cfg"
	case $cfg:$wl in
	raw:over) VAL=$(load seq "$W") ;;
	raw:readcow) VAL=$(load read "$R") ;;
	*:seq | *:rand) VAL=$(load "$wl" "$W") ;;
	*:over)
		load seq "$W" >/dev/null
		VAL=$(load seq "$W")
		;;
	*:read) VAL=$(load read "$R") ;;
	*:readcow)
		load seq "$W" >/dev/null
		VAL=$(load read "$R")
		;;
	esac
	"down_$cfg"
	if ! [[ $VAL =~ ^[0-9]+$ ]] || [ "$VAL" -eq 0 ]; then
		fail "$1 $wl: no throughput from fio ($VAL)"
	fi
}

t_start=$(now_us)
echo "suite: $MODE, $REPS pairs per (configuration, workload), $SIZE MiB origin $A (null_blk, memory_backed=1), chunks of $CHUNK sectors, tracking blocks of $BLOCK bytes"
# Fill every device once, so that every run reads and writes real data.
for d in "$A" "$COW" "$TDATA"; do
	dd if=/dev/zero of="$d" bs=1M oflag=direct status=none 2>/dev/null || true
done
for wl in $WORKLOADS; do
	for cfg in $CONFIGS; do
		case $wl:$cfg in readcow:cbt | readcow:dm-era) continue ;; esac
		for i in $(seq "$REPS"); do
			if [ $((i % 2)) -eq 1 ]; then
				one raw "$wl"
				base=$VAL
				one "$cfg" "$wl"
				with=$VAL
			else
				one "$cfg" "$wl"
				with=$VAL
				one raw "$wl"
				base=$VAL
			fi
			base=$(fixed "$base" 1024 2) with=$(fixed "$with" 1024 2)
			printf '%-7s %-10s pair %d: raw %8s MiB/s, with %8s MiB/s, ratio %s\n' \
				"$wl" "$cfg" "$i" "$base" "$with" "$(fixed "${with/./}" "${base/./}" 3)"
			rec "{\"type\": \"pair\", \"workload\": \"$wl\", \"config\": \"$cfg\", \"pair\": $i, \"raw\": $base, \"with\": $with}"
		done
	done
done
t_pairs=$(now_us)

# --- The write stall of a take ---
# stall_run TARGET WATCH TAKE: fio writes 4 KiB at random, iodepth 1, to
# TARGET for STALL_SEC s; once writes reach the disk WATCH (sysfs name),
# TAKE runs (a function; "take_none" for the baseline). Leaves the longest
# write latency in STALL_MS and the time TAKE took in TAKE_MS.
STALL_MIB=$((SIZE / 4))
take_none() { :; }
take_blksnap() { "$BIN" snapshot take --id "$ID" >/dev/null; }
take_dm_snap() {
	dm suspend suite-origin
	dm create suite-snap --table "0 $SECTORS snapshot $A $COW N $CHUNK"
	dm resume suite-origin
}
writes_done() {
	local f
	read -r -a f <"/sys/block/$1/stat"
	echo "${f[4]}"
}
stall_run() {
	local target=$1 watch=$2 take=$3 out=$WORK/stall.terse pid w0 t0 t1 n=0
	rm -f "$out"
	w0=$(writes_done "$watch")
	LD_PRELOAD=$SHIM fio --name=stall --filename="$target" --rw=randwrite --bs=4k --iodepth=1 \
		--ioengine=io_uring --direct=1 --numjobs=1 --thread --size="${STALL_MIB}M" \
		--time_based --runtime="$STALL_SEC" --minimal --output="$out" &
	pid=$!
	while [ "$(writes_done "$watch")" = "$w0" ] && [ $n -lt 200 ]; do
		sleep 0.05
		n=$((n + 1))
	done
	sleep 1
	t0=$(now_us)
	"$take"
	t1=$(now_us)
	wait "$pid" || fail "fio failed during the stall run"
	TAKE_MS=$(fixed $((t1 - t0)) 1000 2)
	# Field 80: the longest write latency, in microseconds.
	STALL_MS=$(fixed "$(terse_sum 79 <"$out")" 1000 3)
}
# stall_pairs NAME FS SETUP TEARDOWN TARGET WATCH TAKE: STALL_REPS pairs of
# (no take, take) runs, each between SETUP and TEARDOWN.
stall_pairs() {
	local name=$1 fs=$2 setup=$3 teardown=$4 target=$5 watch=$6 take=$7 i base with tms held
	for i in $(seq "$STALL_REPS"); do
		"$setup"
		stall_run "$target" "$watch" take_none
		base=$STALL_MS
		"$teardown"
		"$setup"
		stall_run "$target" "$watch" "$take"
		with=$STALL_MS tms=$TAKE_MS
		held=null
		[ "$take" != take_blksnap ] || held=$(held_us | cut -d' ' -f1)
		"$teardown"
		printf 'stall   %-10s %-5s pair %d: longest write %8.2f ms without a take, %8.2f ms across it (take %.1f ms, writes held %s us)\n' \
			"$name" "$fs" "$i" "$base" "$with" "$tms" "$held"
		rec "{\"type\": \"stall\", \"config\": \"$name\", \"fs\": \"$fs\", \"pair\": $i, \"base_ms\": $base, \"with_ms\": $with, \"take_ms\": $tms, \"held_us\": $held}"
	done
}
nb() { basename "$(readlink -f "$1")"; }
# Raw device.
st_blksnap_up() {
	attach "$A"
	ID=$("$BIN" snapshot create --storage "$STORE" --limit $((SIZE + 32))M "$A")
}
st_blksnap_down() {
	"$BIN" snapshot destroy --id "$ID" >/dev/null
	ID=
	detach "$A"
}
st_dm_snap_up() { dm create suite-origin --table "0 $SECTORS snapshot-origin $A"; }
st_dm_snap_down() {
	dm remove suite-snap 2>/dev/null || true
	dm remove suite-origin
}
st_dm_thin_up() {
	dd if=/dev/zero of="$TMETA" bs=4096 count=1 oflag=direct status=none
	dm create suite-pool --table \
		"0 $(blockdev --getsz "$TDATA") thin-pool $TMETA $TDATA $CHUNK 0 1 skip_block_zeroing"
	dm message suite-pool 0 "create_thin 0"
	dm create suite-thin --table "0 $SECTORS thin $(pool_dev) 0"
	dd if=/dev/zero of=/dev/mapper/suite-thin bs=1M count="$STALL_MIB" oflag=direct status=none
}
st_dm_thin_down() { down_dm_thin; }
stall_pairs blksnap none st_blksnap_up st_blksnap_down "$A" "$(nb "$A")" take_blksnap
stall_pairs dm-snap none st_dm_snap_up st_dm_snap_down /dev/mapper/suite-origin "$(nb "$A")" take_dm_snap
stall_pairs dm-thin none st_dm_thin_up st_dm_thin_down /dev/mapper/suite-thin "$(nb "$TDATA")" thin_take
# ext4 mounted on the origin (dm-snapshot: on snapshot-origin; the suspend
# freezes it as the take of blksnap does), fio writing into a file.
fs_file() {
	mount -o noatime "$1" "$MNT"
	dd if=/dev/zero of="$MNT/stall.dat" bs=1M count="$STALL_MIB" oflag=direct status=none
}
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1,nodiscard "$A"
st_blksnap_fs_up() {
	st_blksnap_up
	fs_file "$A"
}
st_blksnap_fs_down() {
	umount "$MNT"
	st_blksnap_down
}
stall_pairs blksnap ext4 st_blksnap_fs_up st_blksnap_fs_down "$MNT/stall.dat" "$(nb "$A")" take_blksnap
st_dm_snap_fs_up() {
	st_dm_snap_up
	fs_file /dev/mapper/suite-origin
}
st_dm_snap_fs_down() {
	umount "$MNT"
	st_dm_snap_down
}
stall_pairs dm-snap ext4 st_dm_snap_fs_up st_dm_snap_fs_down "$MNT/stall.dat" "$(nb "$A")" take_dm_snap
t_stall=$(now_us)

# --- Take time and memory, on 1 TiB devices that keep no data ---
# Tiny devices (1 MiB: a map of 16 bytes) beside them, attached first: what
# they take is what tracking costs per device whatever its size, told apart
# from what it costs per TiB. One more is attached and detached before any
# figure is taken, so that what the first attach sets up once is in neither.
TIBS=() TINYS=()
for i in $(seq "$TIB_DEVS"); do
	TIBS+=("$(make_nullb "sb-tib$i" 1048576 0)")
	TINYS+=("$(make_nullb "sb-tiny$i" 1 0)")
done
WARM=$(make_nullb sb-warm 1 0)
attach "$WARM"
detach "$WARM"
# meminfo: MemFree, Slab and VmallocUsed in KiB, caches dropped first.
meminfo() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	awk '/^MemFree:/ { f = $2 } /^Slab:/ { s = $2 } /^VmallocUsed:/ { v = $2 }
		END { printf "%d %d %d", f, s, v }' /proc/meminfo
}
"$BIN" version >/dev/null
m0=$(meminfo)
for d in "${TINYS[@]}"; do attach "$d"; done
mt=$(meminfo)
for d in "${TIBS[@]}"; do attach "$d"; done
m1=$(meminfo)
ID=$("$BIN" snapshot create --storage "$STORE" --limit 64M "${TIBS[@]}")
"$BIN" snapshot take --id "$ID" >/dev/null
m2=$(meminfo)
"$BIN" snapshot destroy --id "$ID" >/dev/null
ID=
m3=$(meminfo)
maps=$(dmesg | sed -n 's/.* tracking blocks of [0-9]* bytes, change maps of \([0-9]*\) bytes.*/\1/p' |
	tail -"$TIB_DEVS" | awk '{ s += $1 } END { print s }')
# The chunk map: a state byte and a 32-bit slot per chunk.
cap=$((1 << 40))
cshift=$(chunk_shift "$cap")
chunks=$(((cap + (1 << cshift) - 1) >> cshift))
read -r f0 _ _ <<<"$m0"
read -r ft s0 v0 <<<"$mt"
read -r f1 s1 v1 <<<"$m1"
read -r f2 s2 v2 <<<"$m2"
read -r f3 _ _ <<<"$m3"
echo "memory: $TIB_DEVS devices of 1 MiB: tracking MemFree -$((f0 - ft)) KiB; $TIB_DEVS devices of 1 TiB: tracking expected $maps bytes, MemFree -$((ft - f1)) KiB (slab $((s1 - s0)), vmalloc $((v1 - v0))); snapshot expected $((TIB_DEVS * chunks * 5)) bytes ($chunks chunks of $((1 << cshift)) bytes each), MemFree -$((f1 - f2)) KiB (slab $((s2 - s1)), vmalloc $((v2 - v1))), $((f3 - f2)) KiB back at destroy"
rec "{\"type\": \"memory\", \"what\": \"tracking\", \"devices\": $TIB_DEVS, \"device_bytes\": $cap, \"expected_bytes\": $maps, \"memfree_kib\": $((ft - f1)), \"fixed_kib\": $((f0 - ft)), \"slab_kib\": $((s1 - s0)), \"vmalloc_kib\": $((v1 - v0)), \"block_bytes\": $(dmesg | sed -n 's/.* tracking blocks of \([0-9]*\) bytes.*/\1/p' | tail -1)}"
rec "{\"type\": \"memory\", \"what\": \"snapshot\", \"devices\": $TIB_DEVS, \"device_bytes\": $cap, \"expected_bytes\": $((TIB_DEVS * chunks * 5)), \"memfree_kib\": $((f1 - f2)), \"slab_kib\": $((s2 - s1)), \"vmalloc_kib\": $((v2 - v1)), \"chunk_bytes\": $((1 << cshift)), \"freed_kib\": $((f3 - f2))}"

# Take time for 1, 2 and 4 devices (the tool's command, and the kernel's
# "writes held" and "with freeze and thaw" times).
for n in 1 2 4; do
	[ "$n" -le "$TIB_DEVS" ] || continue
	for i in $(seq "$TAKE_REPS"); do
		ID=$("$BIN" snapshot create --storage "$STORE" --limit 64M "${TIBS[@]:0:n}")
		t0=$(now_us)
		"$BIN" snapshot take --id "$ID" >/dev/null
		t1=$(now_us)
		read -r held freeze <<<"$(held_us)"
		"$BIN" snapshot destroy --id "$ID" >/dev/null
		ID=
		wall=$(fixed $((t1 - t0)) 1000 2)
		printf 'take    %d devices run %d: %8.2f ms (the command), writes held %s us, with freeze and thaw %s us\n' \
			"$n" "$i" "$wall" "$held" "$freeze"
		rec "{\"type\": \"take\", \"devices\": $n, \"run\": $i, \"wall_ms\": $wall, \"held_us\": $held, \"freeze_us\": $freeze}"
	done
done
for d in "${TIBS[@]}" "${TINYS[@]}"; do detach "$d"; done
t_end=$(now_us)

rec "{\"type\": \"meta\", \"mode\": \"$MODE\", \"reps\": $REPS, \"size_mib\": $SIZE, \"chunk_sectors\": $CHUNK, \"block_bytes\": $BLOCK, \"kernel\": \"$(uname -r)\", \"cpus\": $(nproc), \"mem_kib\": $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo), \"pairs_s\": $(((t_pairs - t_start) / 1000000)), \"stall_s\": $(((t_stall - t_pairs) / 1000000)), \"take_mem_s\": $(((t_end - t_stall) / 1000000))}"
python3 "$HERE/report.py" summarize "$REC" "$VM_OUT/suite.json"
python3 "$HERE/report.py" check "$VM_OUT/suite.json"
echo "note: guests under TCG give noisy numbers; the median of alternating pairs is the figure to read"
