#!/bin/bash
# vm: --disk 64M --timeout 300
# vm-requires: CONFIG_BLK_FILTER
# The block device filter interface as user space sees it: the sysfs
# "filter" attribute of a disk, and the BLKFILTER_* ioctls' errors for an
# unknown filter, a missing filter and an unprivileged caller.
set -euo pipefail
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

dev=/dev/vda
attr=/sys/block/vda/filter
[ -b "$dev" ] || fail "no scratch disk $dev"
[ -f "$attr" ] || fail "$attr does not exist"
[ -z "$(cat "$attr")" ] || fail "$attr is not empty: '$(cat "$attr")'"
[ "$(stat -c %a "$attr")" = 444 ] || fail "$attr is not read-only"
# The ioctl request codes of this machine (they differ on powerpc).
PYTHONPATH=$(cd "$(dirname "$0")/lib" && pwd)
export PYTHONPATH PYTHONDONTWRITEBYTECODE=1

# One ioctl on the device, opened O_RDONLY|O_DIRECT as the clients do,
# as root or (last argument "unprivileged") as nobody; prints the errno
# name, or "OK".
cat >/tmp/blkfilter-ioctl.py <<'EOF'
import errno, fcntl, os, struct, sys

from blkioctl import BLKFILTER_ATTACH, BLKFILTER_CTL, BLKFILTER_DETACH

dev, op, name = sys.argv[1:4]
if sys.argv[4:] == ["unprivileged"]:
    os.setgid(65534)
    os.setuid(65534)
fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
raw = name.encode().ljust(32, b"\0")
if op == "ctl":
    buf = bytearray(struct.pack("=32sIIQ", raw, 0, 0, 0))
    req = BLKFILTER_CTL
else:
    buf = bytearray(raw)
    req = BLKFILTER_ATTACH if op == "attach" else BLKFILTER_DETACH
try:
    fcntl.ioctl(fd, req, buf)
    print("OK")
except OSError as e:
    print(errno.errorcode[e.errno])
EOF

expect() {
	local want=$1 got
	shift
	got=$(python3 /tmp/blkfilter-ioctl.py "$@")
	echo "$* -> $got"
	[ "$got" = "$want" ] || fail "$*: got $got, expected $want"
}

expect ENOENT "$dev" attach no-such-filter
expect ENOENT "$dev" detach no-such-filter
expect ENOENT "$dev" ctl no-such-filter
[ -z "$(cat "$attr")" ] || fail "$attr changed: '$(cat "$attr")'"

# Without CAP_SYS_ADMIN: EPERM, before the name is even looked at.
chmod o+r "$dev"
expect EPERM "$dev" attach no-such-filter unprivileged
expect EPERM "$dev" detach no-such-filter unprivileged
expect EPERM "$dev" ctl no-such-filter unprivileged

echo "PASS: blkfilter-sysfs"
