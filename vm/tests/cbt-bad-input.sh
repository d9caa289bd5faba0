#!/bin/bash
# vm: --disk 64M --timeout 300 --append blksnap.tracking_block_minimum_shift=12
# vm-requires: CONFIG_BLKSNAP
# Bad input to the filter ioctls and the control device, beyond what
# blksnap-cbt-ctl.sh (short cbtinfo buffer, cbtmap past the end, bad cbtmap
# and cbtdirty arrays) and blkfilter-sysfs.sh (unknown filter names, an
# unprivileged caller without a filter) check already: names that almost
# match, a second attach from another open file, commands for a filter that
# is not attached, unreadable and unwritable argument memory, cbtmap
# lengths and offsets at the limits of a u32 (cbtmap returns 0, as in
# blksnap v6), cbtdirty arrays that run into unmapped memory, cbtdirty ranges
# that are empty or start past the end (EINVAL, as in v6), and an
# unprivileged caller while the filter is attached
# (and the control device closed to it).
# Each check prints "ok" or "FAIL"; the filter must be in the same state
# after every refused call.
set -euo pipefail
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

dev=${SCRATCH_DISKS%% *}
[ -b "$dev" ] || fail "no scratch disk $dev"
attr=/sys/block/$(basename "$dev")/filter
# nobody cannot reach the pyenv shims under /root: use the system python.
PY=/usr/bin/python3
[ -x "$PY" ] || fail "$PY is missing"
command -v setpriv >/dev/null || fail "setpriv is missing"
# The ioctl request codes of this machine (they differ on powerpc).
PYTHONPATH=$(cd "$(dirname "$0")/lib" && pwd)
export PYTHONPATH PYTHONDONTWRITEBYTECODE=1

cat >/tmp/cbt-bad-input.py <<'EOF'
import ctypes, errno, fcntl, mmap, os, struct, sys

from blkioctl import BLKFILTER_ATTACH, BLKFILTER_CTL, BLKFILTER_DETACH, IOCTL_BLKSNAP_VERSION
CBTINFO, CBTMAP, CBTDIRTY = range(3)
NAME = b"blksnap".ljust(32, b"\0")
PAGE = mmap.PAGESIZE
PROT_NONE, PROT_READ = 0, 1

libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

dev, mode = sys.argv[1], sys.argv[2]
failures = 0


def check(what, got, want):
    global failures
    ok = got == want
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {got!r}" + ("" if ok else f", expected {want!r}"))
    if not ok:
        failures += 1


def ioctl(fd, req, addr):
    """The raw ioctl with a bare address; returns its value or the errno name."""
    ret = libc.ioctl(fd, req, addr)
    if ret < 0:
        return errno.errorcode[ctypes.get_errno()]
    return ret


class Pages:
    """Two anonymous pages: the first read-write, the second PROT_NONE, so
    that data put at the end of the first runs into unmapped memory."""

    def __init__(self):
        self.m = mmap.mmap(-1, 2 * PAGE)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.m))
        assert libc.mprotect(self.base + PAGE, PAGE, PROT_NONE) == 0

    def put_at_end(self, data):
        """Writes data ending at the guard page; returns its address."""
        self.m[PAGE - len(data):PAGE] = data
        return self.base + PAGE - len(data)

    def read_only(self):
        assert libc.mprotect(self.base, PAGE, PROT_READ) == 0


def buf(data):
    b = ctypes.create_string_buffer(data, len(data))
    return b, ctypes.addressof(b)


def ctl(fd, cmd, opt_addr, optlen, name=NAME):
    """BLKFILTER_CTL; returns (result or errno name, optlen written back)."""
    arg, addr = buf(struct.pack("=32sIIQ", name, cmd, optlen, opt_addr))
    ret = ioctl(fd, BLKFILTER_CTL, addr)
    return ret, struct.unpack_from("=I", arg.raw, 36)[0]


def attach(fd, name=NAME):
    b, addr = buf(name)
    return ioctl(fd, BLKFILTER_ATTACH, addr)


def detach(fd, name=NAME):
    b, addr = buf(name)
    return ioctl(fd, BLKFILTER_DETACH, addr)


# A 64-byte output buffer that lives as long as the script.
OUT, OUT_ADDR = buf(bytes(64))


def cbtinfo(fd):
    out, addr = buf(bytes(40))
    ret, _ = ctl(fd, CBTINFO, addr, 40)
    if ret != 0:
        return ret, None, None
    count = struct.unpack_from("=I", out.raw, 12)[0]
    return ret, count, out.raw[16:32]


def cbtmap(fd, offset, length, out_addr):
    arg, addr = buf(struct.pack("=IIQ", offset, length, out_addr))
    return ctl(fd, CBTMAP, addr, 16)[0]


fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)

if mode == "unprivileged":
    # As nobody, with the filter attached by root: EPERM for everything,
    # the attached filter untouched (the parent checks it afterwards).
    check("attach", attach(fd), "EPERM")
    check("detach", detach(fd), "EPERM")
    out, addr = buf(bytes(40))
    check("cbtinfo", ctl(fd, CBTINFO, addr, 40)[0], "EPERM")
    check("cbtinfo left the buffer alone", out.raw, bytes(40))
    check("bad pointer still EPERM", ioctl(fd, BLKFILTER_CTL, 8), "EPERM")
    try:
        os.close(os.open("/dev/blksnap-control", os.O_RDWR))
        got = "OK"
    except OSError as e:
        got = errno.errorcode[e.errno]
    check("open /dev/blksnap-control", got, "EACCES")
    sys.exit(1 if failures else 0)

# Not attached yet.
check("ctl blksnap, no filter", ctl(fd, CBTINFO, OUT_ADDR, 40)[0], "ENOENT")
check("detach blksnap, no filter", detach(fd), "ENOENT")
for name in (b"blksna", b"blksnap ", b"BLKSNAP", b"blksnapx", b"\0blksnap", b"x" * 32):
    check(f"attach {name!r}", attach(fd, name.ljust(32, b"\0")), "ENOENT")
check("attach, bad name pointer", ioctl(fd, BLKFILTER_ATTACH, 8), "EFAULT")
p = Pages()
check("attach, name runs into unmapped memory", ioctl(fd, BLKFILTER_ATTACH, p.put_at_end(b"blksnap\0")), "EFAULT")

# Attached.
check("attach", attach(fd), 0)
ret, count, gen = cbtinfo(fd)
check("cbtinfo", ret, 0)
if ret != 0:
    sys.exit(1)
fd2 = os.open(dev, os.O_RDONLY | os.O_DIRECT)
check("attach again, another open file", attach(fd2), "EALREADY")
check("generation kept by the refused attach", cbtinfo(fd2)[2], gen)
os.close(fd2)
for name in (b"blksna", b"BLKSNAP", b"other"):
    n = name.ljust(32, b"\0")
    check(f"ctl for {name!r}", ctl(fd, CBTINFO, OUT_ADDR, 40, n)[0], "ENOENT")
    # v6: a filter of another name is attached.
    check(f"detach {name!r}", detach(fd, n), "EINVAL")

check("detach, bad name pointer", ioctl(fd, BLKFILTER_DETACH, 8), "EFAULT")
check("ctl, bad argument pointer", ioctl(fd, BLKFILTER_CTL, 8), "EFAULT")
q = Pages()
half = struct.pack("=32sIIQ", NAME, CBTINFO, 40, 0)[:40]
check("ctl, argument runs into unmapped memory", ioctl(fd, BLKFILTER_CTL, q.put_at_end(half)), "EFAULT")
check("cbtinfo to a bad buffer", ctl(fd, CBTINFO, 8, 40)[0], "EFAULT")
r = Pages()
ro = r.base
r.read_only()
check("cbtinfo to read-only memory", ctl(fd, CBTINFO, ro, 40)[0], "EFAULT")
# A ctl argument in read-only memory: the kernel reads it, but cannot write
# back the length used (40 of the 64 given).
s = Pages()
out64, addr64 = buf(bytes(64))
s.m[:48] = struct.pack("=32sIIQ", NAME, CBTINFO, 64, addr64)
s.read_only()
check("cbtinfo, optlen not writable back", ioctl(fd, BLKFILTER_CTL, s.base), "EFAULT")
check("cbtinfo, bigger buffer", ctl(fd, CBTINFO, addr64, 64), (0, 40))

check("cbtmap, argument pointer bad", ctl(fd, CBTMAP, 8, 16)[0], "EFAULT")
check("cbtmap, argument short", ctl(fd, CBTMAP, OUT_ADDR, 15)[0], "EINVAL")
m = mmap.mmap(-1, count + PAGE)
maddr = ctypes.addressof(ctypes.c_char.from_buffer(m))
# Lengths beyond the map are cut to what is left: the kernel writes at most
# the map, whatever the length says (no allocation follows the length), and
# returns 0, as blksnap v6 does. Before the first take the map is zeroes.
m[:] = b"\xff" * len(m)
check("cbtmap, length 2^32-1", cbtmap(fd, 0, 0xFFFFFFFF, maddr), 0)
check("cbtmap, length 2^32-1: the whole map, nothing more", (m[:count] == bytes(count), m[count:] == b"\xff" * PAGE), (True, True))
m[:] = b"\xff" * len(m)
check("cbtmap, last byte, length 2^32-1", cbtmap(fd, count - 1, 0xFFFFFFFF, maddr), 0)
check("cbtmap, last byte: one byte", m[:2], b"\x00\xff")
check("cbtmap, length 0", cbtmap(fd, 0, 0, 8), 0)
check("cbtmap, offset 2^31", cbtmap(fd, 0x80000000, 1, maddr), "EINVAL")
check("cbtmap, offset 2^32-1", cbtmap(fd, 0xFFFFFFFF, 0xFFFFFFFF, maddr), "EINVAL")
check("cbtmap, read-only buffer", cbtmap(fd, 0, 16, ro), "EFAULT")
t = Pages()
check("cbtmap, buffer runs into unmapped memory", cbtmap(fd, 0, 64, t.base + PAGE - 32), "EFAULT")

u = Pages()
one = u.put_at_end(struct.pack("=QQ", 0, 8))
for n in (2, 0xFFFFFFFF):
    arg, addr = buf(struct.pack("=IIQ", n, 0, one))
    check(f"cbtdirty, {n} ranges, one mapped", ctl(fd, CBTDIRTY, addr, 16)[0], "EFAULT")
arg, addr = buf(struct.pack("=IIQ", 0, 0, 8))
check("cbtdirty, no ranges, bad pointer", ctl(fd, CBTDIRTY, addr, 16)[0], 0)
check("cbtdirty, argument short", ctl(fd, CBTDIRTY, addr, 8)[0], "EINVAL")
# Ranges that are empty or start at or past the end of the device fail with
# EINVAL, as in blksnap v6 (a range that starts inside is cut at the end).
sectors = os.lseek(fd, 0, os.SEEK_END) // 512
for what, ranges in (("empty range", [(0, 0)]),
                     ("range at the end", [(sectors, 1)]),
                     ("range past the end", [(sectors + 8, 8)]),
                     ("range at 2^64-1", [(2**64 - 1, 1)]),
                     ("range at 2^64-1, count 2^64-1", [(2**64 - 1, 2**64 - 1)]),
                     ("good range, then one past the end", [(0, 1), (sectors, 1)])):
    flat = [x for r in ranges for x in r]
    rbuf, raddr = buf(struct.pack("=%dQ" % len(flat), *flat))
    arg, addr = buf(struct.pack("=IIQ", len(ranges), 0, raddr))
    check(f"cbtdirty, {what}", ctl(fd, CBTDIRTY, addr, 16)[0], "EINVAL")
rbuf, raddr = buf(struct.pack("=QQ", sectors - 1, 2**64 - 1))
arg, addr = buf(struct.pack("=IIQ", 1, 0, raddr))
check("cbtdirty, last sector, count 2^64-1", ctl(fd, CBTDIRTY, addr, 16)[0], 0)

cfd = os.open("/dev/blksnap-control", os.O_RDWR)
check("version, bad pointer", ioctl(cfd, IOCTL_BLKSNAP_VERSION, 8), "EFAULT")
check("version, read-only memory", ioctl(cfd, IOCTL_BLKSNAP_VERSION, ro), "EFAULT")
name_buf, name_addr = buf(NAME)
check("filter ioctl on the control device", ioctl(cfd, BLKFILTER_ATTACH, name_addr), "ENOTTY")

check("cbtinfo still answers", cbtinfo(fd)[1:], (count, gen))
sys.exit(1 if failures else 0)
EOF

[ -z "$(cat "$attr")" ] || fail "$attr is not empty at the start"
"$PY" /tmp/cbt-bad-input.py "$dev" root || fail "checks as root failed"
[ "$(cat "$attr")" = blksnap ] || fail "$attr does not read blksnap"

echo "==> as nobody, with the filter attached"
chmod o+r "$dev"
setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" /tmp/cbt-bad-input.py "$dev" unprivileged ||
	fail "checks as nobody failed"
[ "$(cat "$attr")" = blksnap ] || fail "an unprivileged call changed $attr"
"$BLKSNAP_BIN" cbtinfo "$dev" >/dev/null || fail "cbtinfo fails after the unprivileged calls"

"$BLKSNAP_BIN" detach "$dev"
[ -z "$(cat "$attr")" ] || fail "$attr is not empty after detach"
echo "PASS: cbt-bad-input"
