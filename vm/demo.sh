#!/bin/bash
# The end-to-end demo, run inside the guest by ci/demo.sh. It shows what
# the fork can do today and grows as capabilities land.
set -euo pipefail
section() { printf '\n=== %s ===\n' "$*"; }

section "kernel"
echo "release:  $(uname -r)"
echo "version:  $(cat /proc/version)"
echo "rust:     $(zcat /proc/config.gz | grep -E '^CONFIG_RUST=' || echo 'CONFIG_RUST not set')"
echo "page:     $(getconf PAGESIZE) bytes"

section "KUnit at boot"
dmesg | grep -E '# (Totals|[a-z0-9_]+: pass:)' | sed 's/^\[[^]]*\] *//' || echo "no KUnit summary in the boot log"

section "blksnap"
if [ ! -e /dev/blksnap-control ]; then
	echo "not in this kernel: no /dev/blksnap-control"
	exit 1
fi
[ -x "${BLKSNAP_BIN:-}" ] || {
	echo "no blksnap tool (BLKSNAP_BIN)"
	exit 1
}
disk=${SCRATCH_DISKS%% *}
"$BLKSNAP_BIN" version
echo "+ blksnap attach $disk"
"$BLKSNAP_BIN" attach "$disk"
echo "filter attribute: $(cat "/sys/block/$(basename "$disk")/filter")"
echo "+ dd: 1 MiB written at 8 MiB (direct I/O)"
dd if=/dev/urandom of="$disk" bs=1M seek=8 count=1 oflag=direct status=none
echo "+ blksnap cbtinfo $disk"
"$BLKSNAP_BIN" cbtinfo "$disk"
echo "+ blksnap detach $disk"
"$BLKSNAP_BIN" detach "$disk"
echo "filter attribute after detach: '$(cat "/sys/block/$(basename "$disk")/filter")'"
echo
echo "Snapshots and backups are not in this kernel yet: the CBT map becomes"
echo "readable at the first snapshot; see docs/blksnap-tool.md for the backup job."
