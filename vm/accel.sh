#!/usr/bin/env bash
# Print the QEMU accelerator to use for x86_64 guests: "kvm" when a probe
# boot of the fork's kernel under KVM reaches the point where it looks for
# a root file system, "tcg" otherwise. The result is remembered per machine
# (host kernel and QEMU version). VM_ACCEL=kvm|tcg overrides the probe.
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"

if [ -n "${VM_ACCEL:-}" ]; then
	echo "$VM_ACCEL"
	exit 0
fi
key=$(uname -r)-$(qemu-system-x86_64 --version | head -1 | awk '{print $4}')
state=$BLKSNAP_CACHE/kvm-probe-$key
if [ ! -f "$state" ]; then
	result=tcg
	if [ -w /dev/kvm ]; then
		plog=$(mktemp)
		# No root and no initramfs: a kernel that boots to the end panics
		# with "VFS: Unable to mount root fs", and -no-reboot ends QEMU.
		bash "$REPO/vm/qemu.sh" x86_64 --accel kvm --timeout 60 --log "$plog" \
			--append "kunit.enable=0" || true
		if grep -q "VFS: Unable to mount root fs\|No working init found" "$plog"; then
			result=kvm
		fi
		cp "$plog" "$BLKSNAP_CACHE/kvm-probe.log"
		rm -f "$plog"
	fi
	echo "$result" >"$state"
	echo "vm: KVM probe: $result (log: $BLKSNAP_CACHE/kvm-probe.log)" >&2
fi
cat "$state"
