/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * Block device filter: user-space interface.
 *
 * A block device filter is a kernel component that sees every bio submitted
 * to a block device before the device does.  User space attaches a filter to
 * a device by name, detaches it again, and sends filter-specific commands to
 * it, always through ioctls issued on the block device itself.
 */
#ifndef _UAPI_LINUX_BLK_FILTER_H
#define _UAPI_LINUX_BLK_FILTER_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Size of the name buffer; a shorter name is padded with NUL bytes. */
#define BLKFILTER_NAME_LENGTH 32

/**
 * struct blkfilter_name - names a filter for BLKFILTER_ATTACH and
 *	BLKFILTER_DETACH
 * @name: filter name, NUL-padded; need not be NUL-terminated when it
 *	fills the whole buffer.
 */
struct blkfilter_name {
	__u8 name[BLKFILTER_NAME_LENGTH];
};

/**
 * struct blkfilter_ctl - a command for the filter attached to a device,
 *	passed with BLKFILTER_CTL
 * @name: name of the filter the command is meant for; the call fails with
 *	ENOENT unless this filter is the one attached.
 * @cmd: command code, defined by the filter (for blksnap see
 *	&enum blkfilter_ctl_blksnap in <linux/blksnap.h>).
 * @optlen: on input, the size in bytes of the buffer at @opt; on output,
 *	the number of bytes the filter used or needs.
 * @opt: user-space address of the command's argument buffer.
 */
struct blkfilter_ctl {
	__u8 name[BLKFILTER_NAME_LENGTH];
	__u32 cmd;
	__u32 optlen;
	__u64 opt;
};

/*
 * Block device ioctls of the filter interface, in the 0x12 ('BLK') range of
 * the block ioctls of <linux/fs.h>.
 *
 * The numbers are those of the blksnap v6 interface, kept so that its
 * clients work unchanged. They are NOT reserved for this interface upstream,
 * where they are taken already:
 *
 * - 140 and 141 are reserved for future blk-crypto ioctls
 *   (<linux/blk-crypto.h>; <linux/fs.h> gives 137-141 to blk-crypto);
 * - 142 is used twice: by BLKREPORTZONEV2 (<linux/blkzoned.h>, argument
 *   struct blk_zone_report, 16 bytes) and by BLKTRACESETUP2 (<linux/fs.h>,
 *   struct blk_user_trace_setup2, 192 bytes).
 *
 * An ioctl value also encodes the argument size, so the values below do not
 * equal any of those today (struct blkfilter_ctl is 48 bytes, struct
 * blkfilter_name 32), but a future blk-crypto ioctl at 140 or 141 with a
 * 32-byte _IOWR argument would. An upstream submission needs numbers of its
 * own (see Documentation/block/blkfilter.rst).
 *
 * BLKFILTER_ATTACH: attach the named filter.
 * BLKFILTER_DETACH: detach the named filter.
 * BLKFILTER_CTL: send a command to the attached filter.
 * The errors, in the order they are checked, are listed in
 * Documentation/block/blkfilter.rst.
 */
#define BLKFILTER_ATTACH	_IOWR(0x12, 140, struct blkfilter_name)
#define BLKFILTER_DETACH	_IOWR(0x12, 141, struct blkfilter_name)
#define BLKFILTER_CTL		_IOWR(0x12, 142, struct blkfilter_ctl)

#endif /* _UAPI_LINUX_BLK_FILTER_H */
