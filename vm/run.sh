#!/usr/bin/env bash
# Boot the fork's kernel with virtme-ng and run a script in the guest.
#
# usage: vm/run.sh [options] SCRIPT [ARGS...]
#   --arch ARCH       x86_64 (default) or ppc64le (64 KiB pages, QEMU
#                     pseries under TCG)
#   --timeout SEC     kill the guest after SEC seconds (default 600)
#   --disk SIZE       attach a scratch virtio-blk disk of SIZE (e.g. 256M);
#                     repeatable; the guest sees them in $SCRATCH_DISKS
#   --log FILE        keep the console log there (default: a file under
#                     $BLKSNAP_CACHE/vm-logs, printed at the end)
#   --out DIR         a host directory shared read/write with the guest as
#                     $VM_OUT (default: a fresh temporary directory)
#   --append ARGS     extra kernel command line
#   --memory SIZE     guest memory (default 2G)
#   --kernel DIR      build directory to boot (default: the build of ARCH)
#
# The script runs as root in the guest. An x86_64 guest has the host's root
# file system shared read-only (virtme-ng) and the repository at its host
# path. A ppc64le guest cannot run the host's binaries: it boots on a root
# file system of Debian ppc64el packages (ci/ppc-guest.sh, made by
# ci/bootstrap.sh), with the repository shared read-only at $REPO, the
# output directory at $VM_OUT and the tools ($BLKSNAP_BIN, $V6CLIENT_BIN:
# ppc64le builds, copied in) under /run/blksnap. The exit
# status is the script's; a guest that panics, hangs past the timeout or
# never reports a status is a failure (exit 124 for a timeout, 125 when no
# status came back). The full console log is kept either way. A kernel that
# reports a bug while it boots, before the script has started, is booted
# again, up to twice (the last failed boot's log is kept as
# LOG.boot-failure).
#
# KVM is used when a probe boot shows that it works on this machine,
# TCG otherwise; the choice is printed. Set VM_ACCEL=kvm|tcg to force one.
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"

timeout=600 memory=2G log="" out="" append="" kdir="" arch=x86_64
disks=()
while [ $# -gt 0 ]; do
	case $1 in
	--timeout) timeout=$2 && shift 2 ;;
	--disk) disks+=("$2") && shift 2 ;;
	--log) log=$2 && shift 2 ;;
	--out) out=$2 && shift 2 ;;
	--append) append="$append $2" && shift 2 ;;
	--memory) memory=$2 && shift 2 ;;
	--kernel) kdir=$2 && shift 2 ;;
	--arch) arch=$2 && shift 2 ;;
	--) shift && break ;;
	-*) die "unknown option $1" ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || die "usage: $0 [options] SCRIPT [ARGS...]"
script=$(realpath "$1")
shift
[ -f "$script" ] || die "no such script: $script"
kdir=${kdir:-$(build_dir "$arch")}
case $arch in
x86_64) kimg=arch/x86/boot/bzImage ;;
ppc64le)
	kimg=vmlinux
	# shellcheck source=../ci/ppc-guest.sh
	. "$REPO/ci/ppc-guest.sh"
	[ -f "$PPC_ROOT/.stamp" ] || die "no ppc64le root file system at $PPC_ROOT: run ci/bootstrap.sh"
	# virtme-ng puts its init commands in a file of the root when the
	# command line would be too long, and removes it at exit; a guest killed
	# on timeout leaves it behind.
	find "$PPC_ROOT" -maxdepth 1 -name 'virtme-init-*' -mmin +720 -delete
	;;
*) die "unknown architecture '$arch'" ;;
esac
[ -f "$kdir/$kimg" ] || die "no kernel in $kdir: run ci/build.sh $arch first"

work=$(mktemp -d "${TMPDIR:-/tmp}/blksnap-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -z "$out" ]; then
	out=$work/out
fi
mkdir -p "$out"
out=$(realpath "$out")
if [ -z "$log" ]; then
	mkdir -p "$BLKSNAP_CACHE/vm-logs"
	log=$BLKSNAP_CACHE/vm-logs/$(basename "$script" .sh)-$(date +%Y%m%d-%H%M%S).log
fi

# Scratch disks: sparse files, attached as virtio-blk with a serial number
# so that the guest can tell them apart (vda, vdb, ... in this order; the
# root file system is shared, not a disk).
qopts=()
scratch=()
letters=(a b c d e f g h)
i=0
for size in "${disks[@]}"; do
	f=$work/scratch$i.img
	truncate -s "$size" "$f"
	qopts+=(-drive "file=$f,if=none,id=scratch$i,format=raw,cache=unsafe"
		-device "virtio-blk-pci,drive=scratch$i,serial=scratch$i")
	scratch+=("/dev/vd${letters[$i]}")
	i=$((i + 1))
done

# No KVM for another architecture.
if [ "$arch" = x86_64 ]; then
	accel=$(bash "$REPO/vm/accel.sh")
else
	accel=tcg
fi
echo "$accel" >"$work/accel"

# Paths as the guest sees them: the host's on x86_64, shares under
# /run/blksnap on ppc64le. $share holds the wrapper (and the ppc64le tools).
share=$work/share
mkdir -p "$share"
g_script=$script g_repo=$REPO g_out=$out g_share=$share
g_bin=${BLKSNAP_BIN:-} g_v6=${V6CLIENT_BIN:-}
if [ "$arch" = ppc64le ]; then
	g_repo=/run/blksnap/repo g_out=/run/blksnap/out g_share=/run/blksnap/share
	case $script in
	"$REPO"/*) g_script=$g_repo/${script#"$REPO"/} ;;
	*) cp "$script" "$share/script.sh" && g_script=$g_share/script.sh ;;
	esac
	if [ -n "$g_bin" ]; then
		cp "$g_bin" "$share/blksnap" && g_bin=$g_share/blksnap
	fi
	if [ -n "$g_v6" ]; then
		cp "$g_v6" "$share/v6client" && g_v6=$g_share/v6client
	fi
fi

# The guest runs a wrapper: it sets the environment, runs the script and
# leaves the status in the shared directory as a second witness. The
# script's output goes to a file of its own in the shared directory, not to
# the console: the console and the guest's standard output reach the log
# through two files of QEMU's, each writing from its own offset, so the
# script's lines overwrote the head of the console log. The start line goes
# to the kernel log, where it keeps its place among the kernel's messages.
cat >"$share/guest.sh" <<EOF
#!/bin/bash
export SCRATCH_DISKS="${scratch[*]}" VM_OUT="$g_out" REPO="$g_repo" PATH="\$PATH:/usr/sbin:/sbin"
export BLKSNAP_BIN="$g_bin" V6CLIENT_BIN="$g_v6" BLKSNAP_CACHE="$BLKSNAP_CACHE"
cd "$g_repo"
start="guest: \$(uname -r), accel=$(cat "$work/accel" 2>/dev/null || echo ?)"
echo "\$start" >/dev/kmsg
echo "\$start" >"$g_out/script.log"
bash "$g_script" $(printf '%q ' "$@") >>"$g_out/script.log" 2>&1
rc=\$?
echo "\$rc" >"$g_out/.status"
exit \$rc
EOF
chmod +x "$share/guest.sh"

# virtiofsd does not start here (no FUSE in the sandbox): use 9p at once.
# KUnit has a run of its own (ci/kunit.sh): a guest test boots without it.
vng_args=(--run "$kdir" --disable-microvm --force-9p --memory "$memory" --cpus 2 --verbose
	--append "kunit.enable=0$append")
if [ "$arch" = ppc64le ]; then
	# On a foreign root virtme-ng runs its shell init (virtme-init).
	vng_args+=(--arch ppc64el --root "$PPC_ROOT" --rodir "$g_repo=$REPO"
		--rodir "$g_share=$share" --rwdir "$g_out=$out")
	# The CPU that vm/qemu.sh and KUnit boot with.
	qopts=(-cpu power9 "${qopts[@]}")
else
	vng_args+=(--rwdir "$out")
fi
[ "$accel" = kvm ] || vng_args+=(--disable-kvm)
[ ${#qopts[@]} -eq 0 ] || vng_args+=(--qemu-opts="${qopts[*]}")

# The kernel bug report pattern ($oops) and failed_while_booting.
. "$(dirname "$0")/boot-check.sh"

log "vm: $(basename "$script") on $(basename "$kdir") ($arch, $accel, timeout ${timeout}s), log: $log"
for attempt in 1 2 3; do
	set +e
	rm -f "$out/script.log"
	timeout --kill-after=10 "$timeout" vng "${vng_args[@]}" --exec "$g_share/guest.sh" \
		</dev/null >"$log" 2>&1 &
	guest=$!
	# The terminal follows the script; the console is in the log (and
	# its end is shown when the run fails).
	[ -n "${VM_QUIET:-}" ] || tail --pid="$guest" -n +1 -F "$out/script.log" 2>/dev/null &
	# A kernel that reported a bug before the script started may hang
	# instead of panicking (seen on ppc64le under TCG): stop it at once
	# rather than at the timeout (timeout passes the signal to QEMU).
	while kill -0 "$guest" 2>/dev/null; do
		sleep 3
		if ! grep -qE "$guest_mark" "$log" && failed_while_booting "$log"; then
			sleep 5
			kill -TERM "$guest" 2>/dev/null
			break
		fi
	done
	wait "$guest"
	rc=$?
	wait
	set -e
	# A kernel that fails while it boots, before any test code has run,
	# says nothing about the test. Under multi-threaded TCG about one boot
	# in twenty does (an int3 oops on x86_64, an illegal instruction on
	# ppc64le, while the kernel patches its own text: most likely another
	# vCPU running stale code), so two in a row happen too. Boot again, up
	# to twice.
	if [ "$attempt" -lt 3 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] &&
		failed_while_booting "$log"; then
		mv "$log" "$log.boot-failure"
		rm -f "$out/.status"
		echo "vm: the kernel failed while booting, before the script ran" \
			"(log: $log.boot-failure); booting again" >&2
		continue
	fi
	break
done

# The script's output, after the console's, so that the log holds both whole.
if [ -f "$out/script.log" ]; then
	{
		echo "=== guest script output ==="
		cat "$out/script.log"
	} >>"$log"
fi
status=$(cat "$out/.status" 2>/dev/null || true)
rm -f "$out/.status"
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	echo "vm: FAILED: guest timed out after ${timeout}s (log: $log)" >&2
	[ -n "${VM_QUIET:-}" ] || tail -n 30 "$log" >&2
	exit 124
fi
if grep -qE "$oops" "$log"; then
	echo "vm: FAILED: the kernel reported a problem (log: $log):" >&2
	grep -m5 -E -A3 "$oops" "$log" >&2
	exit 125
fi
if [ -z "$status" ]; then
	echo "vm: FAILED: the guest reported no status (vng exit $rc; log: $log)" >&2
	exit 125
fi
if [ "$status" != "$rc" ]; then
	echo "vm: FAILED: status mismatch: script $status, vng $rc (log: $log)" >&2
	exit 125
fi
[ "$status" -eq 0 ] || echo "vm: script failed with status $status (log: $log)" >&2
exit "$status"
