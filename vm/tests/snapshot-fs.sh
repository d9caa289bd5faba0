#!/usr/bin/env bash
# Guest-side test of snapshots of mounted file systems, bad input, and a
# difference storage that runs out:
# - ext4 mounted and written during the snapshot: the image, mounted
#   read-only, shows exactly the files of the take (files created after it
#   are absent); mounted read-write, writes to it leave the origin alone;
# - destroy with the image still mounted works (no oops) and the origin's
#   file system is intact;
# - bad input gets an errno and changes nothing: unknown id, take twice,
#   add after take, a device in two snapshots, a pipe as storage, a
#   read-only file as storage, a limit of 0, storage on the device itself;
# - a file system shut down (it cannot be frozen): the take goes on and the
#   image, crash-consistent, has the files written before the shutdown;
# - a 4 MiB limit filled by writes of 16 MiB: the snapshot breaks (event,
#   error in snapshot info, image reads fail), the origin keeps every byte.
#
# usage (as root, in a guest running the fork):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/snapshot-fs.sh DISK1 DISK2
# vm: --disk 96M --disk 32M --timeout 600
# vm-requires: CONFIG_BLKSNAP
set -euo pipefail

. "$(dirname "$0")/lib/cbt.sh"
read -r -a disks <<<"${SCRATCH_DISKS:-}"
A=${1:-${disks[0]:-}}
B=${2:-${disks[1]:-}}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
for d in "$A" "$B"; do
	[ -n "$d" ] && [ -b "$d" ] || fail "needs two scratch block devices ('$A' '$B')"
done
need_tool
command -v python3 >/dev/null || fail "python3 is needed"
# The ioctl request codes of this machine (they differ on powerpc).
PYTHONPATH=$(cd "$(dirname "$0")/lib" && pwd)
export PYTHONPATH PYTHONDONTWRITEBYTECODE=1

WORK=$(mktemp -d /tmp/snapfs.XXXXXX)
mount -t tmpfs -o size=256M snapfs "$WORK"
IDS=()
cleanup() {
	umount "$WORK/img" 2>/dev/null || true
	umount "$WORK/origin" 2>/dev/null || true
	for id in "${IDS[@]}"; do "$BIN" snapshot destroy --id "$id" >/dev/null 2>&1 || true; done
	for d in "$A" "$B"; do "$BIN" detach "$d" >/dev/null 2>&1 || true; done
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
mkdir "$WORK/diff" "$WORK/origin" "$WORK/img"
files() { (cd "$1" && find . -type f | sort | xargs -r sha256sum); }

step "ext4 on the origin, written during the snapshot"
for d in "$A" "$B"; do "$BIN" detach "$d" >/dev/null 2>&1 || true; done
bs attach "$A" >/dev/null
mkfs.ext4 -q -F "$A"
mount "$A" "$WORK/origin"
for i in $(seq 10); do head -c 512K /dev/urandom >"$WORK/origin/f$i"; done
files "$WORK/origin" >"$WORK/at-take"
ID=$("$BIN" snapshot create --storage "$WORK/diff" --limit 64M "$A")
IDS+=("$ID")
# The file system stays mounted and busy: the take freezes it for an instant.
(for i in $(seq 200); do echo "$i" >>"$WORK/origin/log"; done) &
bs snapshot take --id "$ID" >/dev/null
wait
IMG=$(image_of "$A")
wait_dev "$IMG"
for i in $(seq 10 20); do head -c 512K /dev/urandom >"$WORK/origin/f$i"; done
rm "$WORK/origin/f1"
sync
files "$WORK/origin" >"$WORK/origin-now"
mount -o ro,noload "$IMG" "$WORK/img"
files "$WORK/img" | grep -v ' ./log$' >"$WORK/image-files" || true
diff "$WORK/at-take" "$WORK/image-files" || fail "the image does not hold the files of the take"
[ ! -e "$WORK/img/f20" ] || fail "a file created after the take shows in the image"
umount "$WORK/img"

step "the image mounted read-write: its writes leave the origin alone"
mount "$IMG" "$WORK/img"
echo "written to the image" >"$WORK/img/only-in-image"
rm "$WORK/img/f2"
sync
umount "$WORK/img"
[ ! -e "$WORK/origin/only-in-image" ] || fail "a file written to the image shows on the origin"
[ -e "$WORK/origin/f2" ] || fail "a file removed from the image is gone from the origin"
files "$WORK/origin" | diff - "$WORK/origin-now" || fail "the origin changed with the image"

step "destroy with the image mounted"
mount -o ro,noload "$IMG" "$WORK/img"
bs snapshot destroy --id "$ID" >/dev/null
IDS=()
umount "$WORK/img" 2>/dev/null || umount -l "$WORK/img" 2>/dev/null || true
[ ! -e "$IMG" ] || { udevadm settle 2>/dev/null || true; sleep 1; }
[ ! -b "$IMG" ] || fail "image still there after destroy"
files "$WORK/origin" | diff - "$WORK/origin-now" || fail "the origin changed at destroy"
umount "$WORK/origin"
fsck.ext4 -fn "$A" >/dev/null || fail "the origin's file system is damaged"

step "bad input: an errno, nothing changed"
bs attach "$B" >/dev/null
python3 - "$A" "$B" "$WORK" <<'EOF'
import errno, fcntl, os, struct, sys

A, B, WORK = sys.argv[1:4]
from blkioctl import BLKFILTER_CTL as CTL
from blkioctl import IOCTL_BLKSNAP_SNAPSHOT_COLLECT as COLLECT
from blkioctl import IOCTL_BLKSNAP_SNAPSHOT_CREATE as CREATE
from blkioctl import IOCTL_BLKSNAP_SNAPSHOT_DESTROY as DESTROY
from blkioctl import IOCTL_BLKSNAP_SNAPSHOT_TAKE as TAKE
failures = 0

def check(what, got, want):
    global failures
    ok = got == want
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {got} (expected {want})")
    failures += not ok

def err(f):
    try:
        f()
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]

ctl = os.open("/dev/blksnap-control", os.O_RDWR)

def create(fd, limit=1 << 17):
    arg = bytearray(struct.pack("=QI16s4x", limit, fd, bytes(16)))
    fcntl.ioctl(ctl, CREATE, arg)
    return bytes(arg[12:28])

def add(dev, sid):
    import ctypes
    buf = ctypes.create_string_buffer(sid, 16)
    fd = os.open(dev, os.O_RDONLY)
    try:
        arg = bytearray(struct.pack("=32sIIQ", b"blksnap", 3, 16, ctypes.addressof(buf)))
        fcntl.ioctl(fd, CTL, arg)
    finally:
        os.close(fd)

def collect():
    arg = bytearray(16)
    fcntl.ioctl(ctl, COLLECT, arg)
    return struct.unpack_from("=I", arg)[0]

storage = os.open(WORK + "/diff", os.O_TMPFILE | os.O_RDWR, 0o600)
check("limit 0", err(lambda: create(storage, 0)), "EINVAL")
r, w = os.pipe()
check("a pipe as storage", err(lambda: create(r)), "EINVAL")
ro = os.open("/proc/version", os.O_RDONLY)
check("a read-only file as storage", err(lambda: create(ro)), "EBADF")
check("a closed descriptor", err(lambda: create(987)), "EBADF")
unknown = bytes(range(16))
check("take an unknown id", err(lambda: fcntl.ioctl(ctl, TAKE, unknown)), "ESRCH")
check("destroy an unknown id", err(lambda: fcntl.ioctl(ctl, DESTROY, unknown)), "ESRCH")
check("add to an unknown id", err(lambda: add(A, unknown)), "ESRCH")
check("no snapshot left by the failures", collect(), 0)

s1 = create(storage)
os.close(storage)  # the kernel keeps its own reference
check("take an empty snapshot", err(lambda: fcntl.ioctl(ctl, TAKE, s1)), "ENODEV")
check("add", err(lambda: add(B, s1)), "OK")
check("add the same device twice", err(lambda: add(B, s1)), "EBUSY")
s2 = create(os.open(WORK + "/diff", os.O_TMPFILE | os.O_RDWR, 0o600))
check("add a device of another snapshot", err(lambda: add(B, s2)), "EBUSY")
check("take", err(lambda: fcntl.ioctl(ctl, TAKE, s1)), "OK")
check("take twice", err(lambda: fcntl.ioctl(ctl, TAKE, s1)), "EALREADY")
check("add after take", err(lambda: add(A, s1)), "EBUSY")
check("collect counts both", collect(), 2)
arg = bytearray(struct.pack("=I4xQ", 1, 0))
check("collect into a too small array", err(lambda: fcntl.ioctl(ctl, COLLECT, arg)), "ENODATA")
check("collect reports the count needed", struct.unpack_from("=I", arg)[0], 2)
arg = bytearray(struct.pack("=I4xQ", 2, 8))
check("collect into a bad pointer", err(lambda: fcntl.ioctl(ctl, COLLECT, arg)), "EFAULT")
img = "/dev/blksnap-image_" + os.popen(f"lsblk -dno MAJ:MIN {B}").read().strip()
fd = os.open(img, os.O_RDONLY)
size = os.lseek(fd, 0, os.SEEK_END)
check("image read past its end", os.pread(fd, 4096, size), b"")
os.close(fd)
check("destroy", err(lambda: fcntl.ioctl(ctl, DESTROY, s1)), "OK")
check("destroy twice", err(lambda: fcntl.ioctl(ctl, DESTROY, s1)), "ESRCH")
check("destroy the other", err(lambda: fcntl.ioctl(ctl, DESTROY, s2)), "OK")
check("none left", collect(), 0)

# The storage on the device being snapshotted.
s3 = create(os.open(A, os.O_RDWR))
check("add the device that holds the storage", err(lambda: add(A, s3)), "EINVAL")
check("destroy", err(lambda: fcntl.ioctl(ctl, DESTROY, s3)), "OK")
sys.exit(1 if failures else 0)
EOF

step "a file system that cannot be frozen (shut down): the take goes on, crash-consistent"
mount "$A" "$WORK/origin"
head -c 256K /dev/urandom >"$WORK/origin/late"
sync
files "$WORK/origin" >"$WORK/at-shutdown"
# Shut down after flushing the log: ext4 then fails every freeze with EIO.
xfs_io -x -c "shutdown -f" "$WORK/origin"
n=$(dmesg | grep -c 'file system not frozen' || true)
ID=$("$BIN" snapshot create --storage "$WORK/diff" --limit 64M "$A")
IDS+=("$ID")
bs snapshot take --id "$ID" >/dev/null || fail "the take failed on a file system that is shut down"
[ "$(dmesg | grep -c 'file system not frozen' || true)" -gt "$n" ] ||
	fail "the kernel log does not say the file system was not frozen"
IMG=$(image_of "$A")
wait_dev "$IMG"
mount -o ro,noload "$IMG" "$WORK/img"
files "$WORK/img" | diff - "$WORK/at-shutdown" || fail "the crash-consistent image lacks the files of the take"
umount "$WORK/img"
bs snapshot destroy --id "$ID" >/dev/null
IDS=()
umount "$WORK/origin"

step "a full difference storage breaks the snapshot, never the origin"
dd if=/dev/urandom of="$B" bs=1M count=32 oflag=direct status=none
ID=$("$BIN" snapshot create --storage "$WORK/diff" --limit 4M "$B")
IDS+=("$ID")
bs snapshot take --id "$ID" >/dev/null
dd if=/dev/urandom of="$WORK/new" bs=1M count=16 status=none
dd if="$WORK/new" of="$B" bs=1M oflag=direct status=none
cmp <(head -c 16M "$B") "$WORK/new" || fail "the origin does not hold what was written"
ev=$(wait_event "$ID" corrupted) || fail "no corrupted event: $ev"
info=$("$BIN" snapshot info "$B")
grep -q "error_code: -28" <<<"$info" || fail "snapshot info does not report ENOSPC: $info"
IMG=$(image_of "$B")
if dd if="$IMG" of=/dev/null bs=1M count=1 iflag=direct status=none 2>/dev/null; then
	fail "a corrupted image still reads"
fi
dd if="$WORK/new" of="$B" bs=1M oflag=direct status=none
cmp <(head -c 16M "$B") "$WORK/new" || fail "writes after the break do not reach the origin"
bs snapshot destroy --id "$ID" >/dev/null
IDS=()
echo "snapshot-fs: all checks passed"
