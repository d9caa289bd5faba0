# Shell helpers for the guest tests that drive the blksnap tool.
# Source it from a test (bash); it sets nothing but functions and $BIN.
#   . "$(dirname "$0")/lib/cbt.sh"
# The tool is $BLKSNAP_BIN (set by ci/vm-tests.sh), else "blksnap" on PATH.

BIN=${BLKSNAP_BIN:-blksnap}

step() { printf '==> %s\n' "$*"; }
fail() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}
# Runs the tool, echoing the command line.
bs() {
	printf '+ blksnap %s\n' "$*" >&2
	"$BIN" "$@"
}
# Runs the tool and expects exit status $1 (its output goes to stderr).
bs_status() {
	local want=$1 rc=0
	shift
	bs "$@" >&2 || rc=$?
	[ "$rc" -eq "$want" ] || fail "blksnap $* exited $rc, expected $want"
}
# cbt_field DEV KEY: the value of "KEY: value" in the cbtinfo output of DEV.
cbt_field() { bs cbtinfo "$1" | awk -v k="$2:" '$1 == k { print $2 }'; }
# Block indexes of readcbtmap output ("FIRST COUNT VALUE" runs), one a line.
expand_runs() { awk '{ for (i = 0; i < $2; i++) print $1 + i }'; }
# json_field EXPR: evaluates EXPR on the JSON document d read from stdin.
json_field() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }
# write_at DEV OFFSET COUNT [SOURCE]: writes COUNT bytes at byte OFFSET of DEV
# with direct I/O (both 512-byte aligned), from SOURCE (default
# /dev/urandom).
write_at() {
	dd if="${4:-/dev/urandom}" of="$1" bs=512 seek=$(($2 / 512)) count=$(($3 / 512)) \
		oflag=direct conv=notrunc status=none
}
# expect_refusal ID DEV ERRTEXT REASON: adding DEV to snapshot ID fails, the
# tool's message holds ERRTEXT (the errno's text, case ignored), and the
# kernel log has a line naming DEV and "refused: REASON" (a regex).
expect_refusal() {
	local id=$1 dev=$2 errtext=$3 reason=$4 rc=0 out
	out=$("$BIN" snapshot add --id "$id" "$dev" 2>&1) || rc=$?
	echo "$out"
	[ "$rc" -ne 0 ] || fail "$dev was added to a snapshot"
	grep -qi "$errtext" <<<"$out" || fail "not '$errtext': $out"
	grep -q "$(lsblk -dno MAJ:MIN "$dev" | tr -d ' ').*refused: $reason" <<<"$(dmesg)" ||
		fail "no kernel log line naming $dev and the reason: $(dmesg | grep refused || true)"
}
# need_tool: fails unless the blksnap tool can be run.
need_tool() {
	command -v "$BIN" >/dev/null || [ -x "$BIN" ] || fail "blksnap binary not found ($BIN); set BLKSNAP_BIN"
}
# wait_event ID KIND: waits for the next event of snapshot ID whose kind is
# KIND ("corrupted", "no-space"), passing over up to three others (10 s
# each); prints the last event read as JSON, and fails if none was KIND.
wait_event() {
	local id=$1 want=$2 ev= _
	for _ in 1 2 3 4; do
		ev=$("$BIN" snapshot wait-event --json --id "$id" --timeout 10000 2>&1 || true)
		if grep -q "\"event\": *\"$want\"" <<<"$ev"; then
			echo "$ev"
			return 0
		fi
	done
	echo "$ev"
	return 1
}
# scsi_debug_disk: prints the disk of scsi_debug (/dev/sdX) once it shows,
# or fails after 5 s.
scsi_debug_disk() {
	local m d _
	for _ in $(seq 50); do
		for m in /sys/block/sd*/device/model; do
			[ -e "$m" ] && grep -q scsi_debug "$m" || continue
			d=/dev/$(basename "$(dirname "$(dirname "$m")")")
			[ -b "$d" ] && echo "$d" && return 0
		done
		sleep 0.1
	done
	return 1
}
# make_nullb NAME SIZE_MIB MEMORY_BACKED [BLOCK_SIZE]: a null_blk device made
# through configfs (MEMORY_BACKED 0: it keeps no data; BLOCK_SIZE: its
# logical block size, 512 unless given); prints its path (/dev/NAME on
# recent kernels, /dev/nullbINDEX on older ones).
NULLB_CFG=/sys/kernel/config/nullb
make_nullb() {
	local c=$NULLB_CFG/$1 name
	[ -d "$NULLB_CFG" ] || mount -t configfs none /sys/kernel/config
	mkdir "$c" || fail "cannot make null_blk $1 (configfs: $NULLB_CFG)"
	echo "$2" >"$c/size"
	echo "$3" >"$c/memory_backed"
	echo "${4:-512}" >"$c/blocksize"
	echo 1 >"$c/power"
	for name in "$1" "nullb$(cat "$c/index")"; do
		[ -b "/dev/$name" ] && echo "/dev/$name" && return 0
	done
	fail "no disk for null_blk $1 in /sys/block: $(ls /sys/block)"
}
# image_of DEV: the image disk of DEV while a snapshot of it is taken.
image_of() { echo "/dev/blksnap-image_$(lsblk -dno MAJ:MIN "$1" | tr -d ' ')"; }
# wait_dev PATH: waits up to 5 s for the block device PATH to show.
wait_dev() {
	local _
	for _ in $(seq 50); do [ -b "$1" ] && return 0; sleep 0.1; done
	fail "no device $1"
}
