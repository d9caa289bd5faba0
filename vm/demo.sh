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
if [ -e /dev/blksnap-control ]; then
	echo "control device present: /dev/blksnap-control"
	if [ -n "${BLKSNAP_BIN:-}" ] && [ -x "$BLKSNAP_BIN" ]; then
		"$BLKSNAP_BIN" version
	fi
else
	echo "not in this kernel yet: no /dev/blksnap-control"
fi
