#!/usr/bin/env bash
# Boot the fork's ppc64le kernel (64 KiB pages) under QEMU pseries (TCG)
# with a busybox initramfs and run a script in the guest.
#
# usage: vm/run-ppc64le.sh [--timeout SEC] [--log FILE] [--disk SIZE]...
#                          SCRIPT [ARGS...]
# The host's x86 user space cannot run there: the script runs under
# busybox sh (POSIX shell and busybox applets only). Scratch disks appear
# as virtio-blk devices, listed in $SCRATCH_DISKS. Exit status: the
# script's; 124 on timeout; 125 when the guest reported no status or the
# kernel reported an oops or a panic.
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"

timeout=600 log=""
disks=()
while [ $# -gt 0 ]; do
	case $1 in
	--timeout) timeout=$2 && shift 2 ;;
	--log) log=$2 && shift 2 ;;
	--disk) disks+=("$2") && shift 2 ;;
	--) shift && break ;;
	-*) die "unknown option $1" ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || die "usage: $0 [options] SCRIPT [ARGS...]"
script=$(realpath "$1")
shift
bb=$TOOLS/busybox-ppc64el
[ -x "$bb" ] || die "no ppc64el busybox: run ci/bootstrap.sh"
if [ -z "$log" ]; then
	mkdir -p "$BLKSNAP_CACHE/vm-logs"
	log=$BLKSNAP_CACHE/vm-logs/ppc64le-$(basename "$script" .sh)-$(date +%Y%m%d-%H%M%S).log
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/blksnap-ppc.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt}
cp "$bb" "$root/bin/busybox"
cp "$script" "$root/test.sh"
qargs=()
scratch=()
letters=(a b c d e f g h)
i=0
for size in "${disks[@]}"; do
	truncate -s "$size" "$work/scratch$i.img"
	qargs+=(-drive "file=$work/scratch$i.img,if=none,id=scratch$i,format=raw,cache=unsafe"
		-device "virtio-blk-pci,drive=scratch$i,serial=scratch$i")
	scratch+=("/dev/vd${letters[$i]}")
	i=$((i + 1))
done
# The init: mount the kernel file systems, run the script, print its status
# on the console for the host to read, power off.
cat >"$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin SCRATCH_DISKS="${scratch[*]}"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
echo "guest: \$(uname -r) \$(uname -m)"
sh /test.sh $(printf '%q ' "$@")
echo "VM-STATUS=\$?"
poweroff -f
INIT

chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 >"$work/initramfs.gz"

rc=0
bash "$REPO/vm/qemu.sh" ppc64le --timeout "$timeout" --log "$log" \
	--initrd "$work/initramfs.gz" --append "kunit.enable=0 rdinit=/init" -- "${qargs[@]}" || rc=$?
cat "$log"
if [ "$rc" -eq 124 ]; then
	echo "vm: FAILED: ppc64le guest timed out after ${timeout}s (log: $log)" >&2
	exit 124
fi
oops='^\[ *[0-9]+\.[0-9]+\] (Kernel panic|BUG: |Oops|WARNING: CPU: |kernel BUG at)'
if grep -qE "$oops" "$log"; then
	echo "vm: FAILED: the kernel reported a problem (log: $log)" >&2
	exit 125
fi
status=$(grep -a -o 'VM-STATUS=[0-9]*' "$log" | tail -1 | cut -d= -f2)
if [ -z "$status" ]; then
	echo "vm: FAILED: the ppc64le guest reported no status (log: $log)" >&2
	exit 125
fi
exit "$status"
