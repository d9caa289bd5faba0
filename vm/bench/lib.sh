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

# tools_in_memory DIR PROGRAM...: copies the programs, every library they
# load and the blksnap tool (BIN) to a tmpfs mounted at DIR, and runs them
# from there (PATH, LD_LIBRARY_PATH, BIN). The root file system of a
# virtme-ng guest is 9p without a cache: each start of fio reads its
# sixty-odd libraries (80 MiB: ceph, gluster, rdma...) from the host again,
# seconds per run under TCG, and the debug build of the tool is 25 MiB.
tools_in_memory() {
	local dir=$1 p path
	shift
	mkdir -p "$dir"
	mount -t tmpfs -o size=512M benchtools "$dir"
	mkdir "$dir/bin" "$dir/lib"
	for p in "$@"; do
		path=$(command -v "$p") || fail "$p is missing"
		cp "$path" "$dir/bin/"
		ldd "$path" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p' | xargs -r cp -Ln -t "$dir/lib/"
	done
	cp "$(command -v "$BIN")" "$dir/bin/blksnap"
	BIN=$dir/bin/blksnap
	export PATH="$dir/bin:$PATH" LD_LIBRARY_PATH="$dir/lib"
}
