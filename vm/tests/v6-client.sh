#!/usr/bin/env bash
# An existing blksnap v6 client, compiled from the fork's UAPI headers alone
# (vm/tests/lib/v6client.c), creates, takes, reads the image of and destroys
# a snapshot without change; a snapshot whose storage overflows gives it
# exactly v6's events (one "corrupted", its errno positive), never the
# no-space event it did not ask for.
# vm: --disk 16M --timeout 300
# vm-requires: CONFIG_BLKSNAP
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
uapi=$here/../../linux/tree/include/uapi
DISK=${1:-${SCRATCH_DISKS%% *}}
[ -b "$DISK" ] || { echo "FAIL: no scratch disk" >&2; exit 1; }
work=$(mktemp -d /tmp/v6client.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Built here with the fork's UAPI headers first and the rest from the
# system, or given built ($V6CLIENT_BIN: ppc64le guests have no compiler;
# ci/ppc-guest.sh cross-builds it the same way).
client=${V6CLIENT_BIN:-}
if [ -z "$client" ]; then
	client=$work/v6client
	cc -O2 -Wall -Werror -I"$uapi" -o "$client" "$here/lib/v6client.c"
fi
dd if=/dev/urandom of="$DISK" bs=1M count=2 oflag=direct status=none
"$client" "$DISK" /tmp
