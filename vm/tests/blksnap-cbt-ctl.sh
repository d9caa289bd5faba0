#!/bin/bash
# vm: --disk 100M --timeout 300 --append blksnap.tracking_block_minimum_shift=12
# vm-requires: CONFIG_BLKSNAP
# The blksnap driver's change tracker as user space sees it, through the raw
# ioctls: the version of /dev/blksnap-control, attach, the cbtinfo, cbtmap
# and cbtdirty commands and their errors (the v6 values: cbtmap returns 0,
# cbtdirty refuses empty ranges and ranges past the end with EINVAL), the
# an unknown command, detach. The kernel command line sets the smallest
# tracking block to 4 KiB (the default is 64 KiB), which cbtinfo must show.
set -euo pipefail
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

dev=/dev/vda
[ -b "$dev" ] || fail "no scratch disk $dev"
[ -c /dev/blksnap-control ] || fail "/dev/blksnap-control does not exist"
# The ioctl request codes of this machine (they differ on powerpc).
PYTHONPATH=$(cd "$(dirname "$0")/lib" && pwd)
export PYTHONPATH PYTHONDONTWRITEBYTECODE=1

cat >/tmp/blksnap-cbt-ctl.py <<'EOF'
import ctypes, errno, fcntl, mmap, os, struct, sys

from blkioctl import (BLKFILTER_ATTACH, BLKFILTER_CTL, BLKFILTER_DETACH,
                      IOCTL_BLKSNAP_SNAPSHOT_CREATE, IOCTL_BLKSNAP_VERSION)
CBTINFO, CBTMAP, CBTDIRTY, SNAPSHOTADD, SNAPSHOTINFO = range(5)
NAME = b"blksnap".ljust(32, b"\0")

dev = sys.argv[1]
failures = 0


def check(what, got, want):
    global failures
    ok = got == want
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {got!r}" + ("" if ok else f", expected {want!r}"))
    if not ok:
        failures += 1


def errname(fn):
    try:
        return ("OK", fn())
    except OSError as e:
        # EOPNOTSUPP and ENOTSUP are the same number on Linux.
        name = "EOPNOTSUPP" if e.errno == errno.EOPNOTSUPP else errno.errorcode[e.errno]
        return (name, None)


def ctl(fd, cmd, opt, optlen=None):
    """BLKFILTER_CTL with `opt` (a ctypes buffer); returns (result, optlen)."""
    n = len(opt) if optlen is None else optlen
    arg = bytearray(struct.pack("=32sIIQ", NAME, cmd, n, ctypes.addressof(opt)))
    ret = fcntl.ioctl(fd, BLKFILTER_CTL, arg)
    return ret, struct.unpack_from("=I", arg, 36)[0]


ctlfd = os.open("/dev/blksnap-control", os.O_RDWR)
buf = bytearray(8)
fcntl.ioctl(ctlfd, IOCTL_BLKSNAP_VERSION, buf)
check("version", struct.unpack("=4H", buf), (2, 0, 0, 0))
# A limit of 0 is refused before the descriptor is looked at.
check("snapshot create, limit 0", errname(lambda: fcntl.ioctl(ctlfd, IOCTL_BLKSNAP_SNAPSHOT_CREATE, bytearray(32)))[0], "EINVAL")
check("unknown control ioctl", errname(lambda: fcntl.ioctl(ctlfd, 0x5699, 0))[0], "ENOTTY")

fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
size = os.lseek(fd, 0, os.SEEK_END)
check("attach", errname(lambda: fcntl.ioctl(fd, BLKFILTER_ATTACH, bytearray(NAME)))[0], "OK")
check("attach again", errname(lambda: fcntl.ioctl(fd, BLKFILTER_ATTACH, bytearray(NAME)))[0], "EALREADY")

info = ctypes.create_string_buffer(40)
ret, optlen = ctl(fd, CBTINFO, info)
capacity, block_size, count = struct.unpack_from("=QII", info.raw)
generation, number = info.raw[16:32], info.raw[32]
check("cbtinfo result", (ret, optlen), (0, 40))
check("capacity", capacity, size)
check("block size", block_size, 4096)
check("block count", count, (size + 4095) // 4096)
check("changes number", number, 0)
check("generation is set", generation != bytes(16), True)
check("cbtinfo, short buffer", errname(lambda: ctl(fd, CBTINFO, ctypes.create_string_buffer(8))), ("EINVAL", None))

# Writes go through the filter (the readable map changes only at a snapshot).
wfd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
block = mmap.mmap(-1, 8192)
block.write(b"\xa5" * 8192)
check("direct write", os.pwritev(wfd, [block], 4096 * 3), 8192)
os.close(wfd)


def cbtmap(offset, length):
    """cbtmap into a buffer of `length` bytes of 0xff; returns the result and the buffer."""
    out = ctypes.create_string_buffer(b"\xff" * max(length, 1), max(length, 1))
    arg = ctypes.create_string_buffer(struct.pack("=IIQ", offset, length, ctypes.addressof(out)), 16)
    ret, _ = ctl(fd, CBTMAP, arg)
    return ret, out.raw[:length]


# cbtmap returns 0, as in blksnap v6, and copies what is left of the map up
# to the length asked for; before the first snapshot take the map is zeroes.
check("cbtmap whole", cbtmap(0, count), (0, bytes(count)))
check("cbtmap odd", cbtmap(7, 13), (0, bytes(13)))
check("cbtmap at the end", cbtmap(count - 5, 100), (0, bytes(5) + b"\xff" * 95))
check("cbtmap just past the end", cbtmap(count, 1), (0, b"\xff"))
check("cbtmap beyond", errname(lambda: cbtmap(count + 1, 1)), ("EINVAL", None))
check("cbtmap bad buffer", errname(lambda: ctl(fd, CBTMAP, ctypes.create_string_buffer(struct.pack("=IIQ", 0, 16, 8), 16))), ("EFAULT", None))


def cbtdirty(*ranges):
    """cbtdirty with the (offset, count) sector ranges."""
    flat = [x for r in ranges for x in r]
    arr = ctypes.create_string_buffer(struct.pack("=%dQ" % len(flat), *flat), max(16 * len(ranges), 1))
    arg = ctypes.create_string_buffer(struct.pack("=IIQ", len(ranges), 0, ctypes.addressof(arr)), 16)
    return errname(lambda: ctl(fd, CBTDIRTY, arg))


# A range that runs past the end is cut there; one that starts at or past
# the end, or is empty, fails with EINVAL, as in blksnap v6.
sectors = size // 512
check("cbtdirty", cbtdirty((8, 1), (sectors - 1, 8)), ("OK", (0, 16)))
check("cbtdirty, range at the end", cbtdirty((8, 1), (sectors, 1))[0], "EINVAL")
check("cbtdirty, range far past the end", cbtdirty((2**64 - 8, 8))[0], "EINVAL")
check("cbtdirty, empty range", cbtdirty((8, 0))[0], "EINVAL")
check("cbtdirty, no ranges", cbtdirty(), ("OK", (0, 16)))
dirty = ctypes.create_string_buffer(struct.pack("=IIQ", 2, 0, 8), 16)
check("cbtdirty bad array", errname(lambda: ctl(fd, CBTDIRTY, dirty))[0], "EFAULT")

check("snapshotadd, unknown snapshot", errname(lambda: ctl(fd, SNAPSHOTADD, ctypes.create_string_buffer(16)))[0], "ESRCH")
check("snapshotinfo, in no snapshot", errname(lambda: ctl(fd, SNAPSHOTINFO, ctypes.create_string_buffer(36)))[0], "ENOENT")
check("unknown command", errname(lambda: ctl(fd, 99, ctypes.create_string_buffer(8)))[0], "ENOTTY")

check("detach", errname(lambda: fcntl.ioctl(fd, BLKFILTER_DETACH, bytearray(NAME)))[0], "OK")
check("cbtinfo after detach", errname(lambda: ctl(fd, CBTINFO, info))[0], "ENOENT")
sys.exit(1 if failures else 0)
EOF

python3 /tmp/blksnap-cbt-ctl.py "$dev" || fail "ioctl checks failed"
echo "PASS: blksnap-cbt-ctl"
