# shellcheck shell=bash
# What the guest sides of ci/bench.sh share. Source it; it sets BIN, CFG and
# SHIM (fio runs with shm-shim.c preloaded: the kernel has no SysV IPC,
# which fio needs even with --thread) and mounts configfs.

BIN=${BLKSNAP_BIN:-blksnap}
CFG=/sys/kernel/config/nullb

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
command -v fio >/dev/null || fail "fio is missing"
SHIM=$(mktemp -d)/shm-shim.so
cc -shared -fPIC -O2 -o "$SHIM" "$(dirname "${BASH_SOURCE[0]}")/shm-shim.c" ||
	fail "cannot build $SHIM"
[ -d "$CFG" ] || mount -t configfs none /sys/kernel/config
[ -d "$CFG" ] || fail "no null_blk configfs ($CFG)"

# make_nullb NAME SIZE_MIB MEMORY_BACKED: a null_blk device made through
# configfs (MEMORY_BACKED 0: no data kept); prints its path.
make_nullb() {
	local c=$CFG/$1 name
	mkdir "$c"
	echo "$2" >"$c/size"
	echo "$3" >"$c/memory_backed"
	echo 1 >"$c/power"
	for name in "$1" "nullb$(cat "$c/index")"; do
		[ -b "/dev/$name" ] && echo "/dev/$name" && return 0
	done
	fail "no disk for null_blk $1"
}
