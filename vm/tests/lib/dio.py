#!/usr/bin/env python3
# Direct I/O through a buffer that does not start on a page, for the guest
# tests of small chunks under large pages.
#
#   dio.py read DEV OFFSET LENGTH BUFOFF        LENGTH bytes of DEV at OFFSET to stdout
#   dio.py write DEV OFFSET LENGTH BUFOFF SRC   bytes OFFSET..OFFSET+LENGTH of SRC to DEV
#
# The data is moved with O_DIRECT through a buffer that starts BUFOFF bytes
# into a page-aligned mapping (BUFOFF may be "tail": 512 bytes before the end
# of the first page, so that the buffer crosses a page boundary). The bio the
# kernel builds then has segments that start inside a page. A short transfer
# is an error.
import mmap
import os
import sys


def buffer(bufoff, length):
    off = mmap.PAGESIZE - 512 if bufoff == "tail" else int(bufoff)
    pages = (off + length + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    area = mmap.mmap(-1, pages * mmap.PAGESIZE)
    return area, memoryview(area)[off:off + length]


def main(argv):
    if len(argv) < 5 or argv[0] not in ("read", "write"):
        sys.exit("usage: dio.py read|write DEV OFFSET LENGTH BUFOFF [SRC]")
    op, dev, offset, length, bufoff = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4]
    area, view = buffer(bufoff, length)
    if op == "read":
        fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
        done = os.preadv(fd, [view], offset)
        os.close(fd)
        if done != length:
            sys.exit(f"dio: read {done} of {length} bytes at {offset} of {dev}")
        sys.stdout.buffer.write(view)
    else:
        with open(argv[5], "rb") as src:
            src.seek(offset)
            view[:] = src.read(length)
        fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
        done = os.pwritev(fd, [view], offset)
        os.fsync(fd)
        os.close(fd)
        if done != length:
            sys.exit(f"dio: wrote {done} of {length} bytes at {offset} of {dev}")
    view.release()
    area.close()


if __name__ == "__main__":
    main(sys.argv[1:])
