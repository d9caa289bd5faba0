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

# make_nullb (and step, bs) come from the guest tests' helpers.
# shellcheck source=vm/tests/lib/cbt.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/cbt.sh"

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
