#!/bin/bash
# vm: --timeout 300
# The guest runs the fork: its release names the fork, and it has Rust.
set -euo pipefail
fail() {
	echo "FAIL: $*" >&2
	exit 1
}
rel=$(uname -r)
echo "release: $rel"
[[ $rel == *-blksnap ]] || fail "release '$rel' does not name the fork (-blksnap)"
zcat /proc/config.gz >/tmp/config
grep -qx 'CONFIG_RUST=y' /tmp/config || fail "kernel has no CONFIG_RUST=y"
grep -qx 'CONFIG_KUNIT=y' /tmp/config || fail "kernel has no CONFIG_KUNIT=y"
echo "page size: $(getconf PAGESIZE)"
echo "PASS: identity"
