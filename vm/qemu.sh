#!/usr/bin/env bash
# Boot a kernel of the fork directly under QEMU (no virtme-ng), console on
# stdio, and exit when the guest powers off, reboots or panics.
#
# usage: vm/qemu.sh ARCH --timeout SEC --log FILE [--append ARGS]
#                   [--initrd FILE] [--accel kvm|tcg] [-- QEMU_ARGS...]
# Exit status: QEMU's, or 124 when the timeout killed the guest.
#
# A kernel that reports a bug before its first KUnit line ("KTAP version")
# failed while booting, before anything it was booted for ran: it is booted
# again, up to twice (the log of the last failed boot is kept as
# LOG.boot-failure). Under multi-threaded TCG about one boot in twenty fails
# so (see vm/run.sh).
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"

arch=${1:?usage: $0 ARCH --timeout SEC --log FILE ...}
shift
timeout=300 log="" append="" initrd="" accel=""
while [ $# -gt 0 ]; do
	case $1 in
	--timeout) timeout=$2 && shift 2 ;;
	--log) log=$2 && shift 2 ;;
	--append) append="$append $2" && shift 2 ;;
	--initrd) initrd=$2 && shift 2 ;;
	--accel) accel=$2 && shift 2 ;;
	--) shift && break ;;
	*) die "unknown option $1" ;;
	esac
done
[ -n "$log" ] || die "--log is required"
bdir=$(build_dir "$arch")

case $arch in
x86_64)
	[ -n "$accel" ] || accel=$(bash "$REPO/vm/accel.sh")
	cpu=max
	[ "$accel" != kvm ] || cpu=host
	cmd=(qemu-system-x86_64 -machine "q35,accel=$accel" -cpu "$cpu" -smp 2 -m 2G
		-kernel "$bdir/arch/x86/boot/bzImage")
	append="console=ttyS0 $append"
	;;
ppc64le)
	# No KVM for another architecture: always TCG.
	accel=tcg
	cmd=(qemu-system-ppc64 -machine "pseries,accel=tcg" -cpu power9 -smp 2 -m 2G
		-kernel "$bdir/vmlinux")
	append="console=hvc0 $append"
	;;
*) die "unknown architecture '$arch'" ;;
esac
[ -z "$initrd" ] || cmd+=(-initrd "$initrd")
cmd+=(-nodefaults -nographic -no-reboot -vga none -serial stdio
	-append "panic=-1 $append" "$@")

# failed_while_booting.
. "$(dirname "$0")/boot-check.sh"

log "qemu: $arch ($accel), timeout ${timeout}s, log $log"
mkdir -p "$(dirname "$log")"
for attempt in 1 2 3; do
	set +e
	timeout --kill-after=10 "$timeout" "${cmd[@]}" </dev/null >"$log" 2>&1
	rc=$?
	set -e
	[ "$rc" -ne 137 ] || rc=124
	if [ "$attempt" -lt 3 ] && [ "$rc" -ne 124 ] && failed_while_booting "$log" 'KTAP version'; then
		mv "$log" "$log.boot-failure"
		log "qemu: the kernel failed while booting (log: $log.boot-failure); booting again"
		continue
	fi
	break
done
exit "$rc"
