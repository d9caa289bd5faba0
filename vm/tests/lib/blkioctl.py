# The request codes of the blkfilter and blksnap ioctls (v6 UAPI,
# include/uapi/linux/blk-filter.h and blksnap.h) on the machine the guest
# runs: powerpc lays the direction bits of _IOC out differently from
# x86_64 (arch/powerpc/include/uapi/asm/ioctl.h), so the numbers differ.
# The guest tests' Python imports it (PYTHONPATH=vm/tests/lib).
import platform

_PPC = platform.machine().startswith(("ppc", "powerpc"))
_WRITE, _READ = (4, 2) if _PPC else (1, 2)
_DIRSHIFT = 29 if _PPC else 30


def _ioc(direction, kind, nr, size):
    return (direction << _DIRSHIFT) | (size << 16) | (kind << 8) | nr


BLKFILTER_ATTACH = _ioc(_READ | _WRITE, 0x12, 140, 32)
BLKFILTER_DETACH = _ioc(_READ | _WRITE, 0x12, 141, 32)
BLKFILTER_CTL = _ioc(_READ | _WRITE, 0x12, 142, 48)
IOCTL_BLKSNAP_VERSION = _ioc(_READ, 0x56, 0, 8)
IOCTL_BLKSNAP_SNAPSHOT_CREATE = _ioc(_READ | _WRITE, 0x56, 1, 32)
IOCTL_BLKSNAP_SNAPSHOT_DESTROY = _ioc(_WRITE, 0x56, 2, 16)
IOCTL_BLKSNAP_SNAPSHOT_TAKE = _ioc(_WRITE, 0x56, 3, 16)
IOCTL_BLKSNAP_SNAPSHOT_COLLECT = _ioc(_READ, 0x56, 4, 16)
IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT = _ioc(_READ, 0x56, 5, 4096)

if not _PPC:
    # The values of the v6 series on x86_64.
    assert (BLKFILTER_ATTACH, BLKFILTER_DETACH, BLKFILTER_CTL) == (0xC020128C, 0xC020128D, 0xC030128E)
    assert (IOCTL_BLKSNAP_VERSION, IOCTL_BLKSNAP_SNAPSHOT_CREATE) == (0x80085600, 0xC0205601)
    assert (IOCTL_BLKSNAP_SNAPSHOT_DESTROY, IOCTL_BLKSNAP_SNAPSHOT_TAKE) == (0x40105602, 0x40105603)
    assert (IOCTL_BLKSNAP_SNAPSHOT_COLLECT, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT) == (0x80105604, 0x90005605)
