/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * blksnap: snapshots of block devices and changed-block tracking (CBT).
 *
 * The interface has two halves:
 *
 * - per-device commands, sent with the BLKFILTER_CTL ioctl of
 *   <linux/blk-filter.h> to a block device that has the "blksnap" filter
 *   attached (the device is opened O_RDONLY | O_DIRECT for this);
 * - snapshot management, through ioctls on the misc device
 *   /dev/blksnap-control.
 *
 * All structures are laid out with natural alignment and are the same on
 * every architecture that has 8-byte aligned __u64; padding is implicit and
 * must be zeroed by the caller.
 */
#ifndef _UAPI_LINUX_BLKSNAP_H
#define _UAPI_LINUX_BLKSNAP_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Name of the control device (under /dev). */
#define BLKSNAP_CTL "blksnap-control"
/*
 * Prefix of the snapshot image disks: the image of device MAJ:MIN is the
 * disk "blksnap-image_MAJ:MIN".
 */
#define BLKSNAP_IMAGE_NAME "blksnap-image"
/* Filter name to pass to BLKFILTER_ATTACH, BLKFILTER_DETACH, BLKFILTER_CTL. */
#define BLKSNAP_FILTER_NAME "blksnap"
/* ioctl type code of the control device. */
#define BLKSNAP 'V'

/**
 * DOC: Changed-block tracking
 *
 * Once the filter is attached, the device is divided into blocks of equal,
 * power-of-two size and the filter keeps one byte per block, the CBT map.
 * A counter, the changes number, is raised by one each time a snapshot that
 * includes the device is taken.  A write stores the current value of the
 * counter in the map bytes of the blocks it touches, so a map byte tells in
 * which interval between two snapshots its block was last written; zero means
 * "not written since tracking started".
 *
 * The map that BLKFILTER_CTL reads is the copy frozen when the last snapshot
 * was taken, and &struct blksnap_cbtinfo.changes_number is the number of that
 * snapshot: every byte of that copy is at most changes_number.  A backup made
 * from the snapshot with changes number N is therefore brought up to date by
 * a later snapshot by copying exactly the blocks whose byte is greater than N.
 *
 * The counter is one byte wide.  When it would overflow, and whenever the
 * tracker is set up afresh (the filter was detached, the machine restarted),
 * the map is cleared and a new generation UUID is chosen.  A map can only be
 * compared with a changes number of the same generation: after a change of
 * generation the next backup must read the whole device.
 */

/**
 * enum blkfilter_ctl_blksnap - command codes for &struct blkfilter_ctl.cmd
 * @blkfilter_ctl_blksnap_cbtinfo: describe the change tracker; @opt points
 *	to a &struct blksnap_cbtinfo that the call fills.
 * @blkfilter_ctl_blksnap_cbtmap: copy part of the CBT map; @opt points to a
 *	&struct blksnap_cbtmap.  A large map is read in several calls with a
 *	growing offset.  Returns the number of bytes copied.
 * @blkfilter_ctl_blksnap_cbtdirty: mark sector ranges as changed, for data
 *	altered behind the tracker's back (for instance by writing to a
 *	snapshot image); @opt points to a &struct blksnap_cbtdirty.
 * @blkfilter_ctl_blksnap_snapshotadd: include the device in a snapshot that
 *	was created but not yet taken; @opt points to a
 *	&struct blksnap_snapshotadd.
 * @blkfilter_ctl_blksnap_snapshotinfo: report the state of the device's
 *	snapshot; @opt points to a &struct blksnap_snapshotinfo that the call
 *	fills.
 *
 * Unless said otherwise a command returns 0 on success and a negative errno
 * on failure.
 */
enum blkfilter_ctl_blksnap {
	blkfilter_ctl_blksnap_cbtinfo,
	blkfilter_ctl_blksnap_cbtmap,
	blkfilter_ctl_blksnap_cbtdirty,
	blkfilter_ctl_blksnap_snapshotadd,
	blkfilter_ctl_blksnap_snapshotinfo
};

#ifndef UUID_SIZE
#define UUID_SIZE 16
#endif

/**
 * struct blksnap_uuid - a 16-byte unique identifier
 * @b: the identifier's bytes, in RFC 4122 order.
 */
struct blksnap_uuid {
	__u8 b[UUID_SIZE];
};

/**
 * struct blksnap_cbtinfo - output of &blkfilter_ctl_blksnap_cbtinfo
 * @device_capacity: size of the tracked device in bytes.
 * @block_size: size of one tracking block in bytes (a power of two).
 * @block_count: number of tracking blocks, which is also the length of the
 *	CBT map in bytes; the last block may extend past the device's end.
 * @generation_id: identifier of the current tracking generation.
 * @changes_number: changes number of the last snapshot taken in this
 *	generation, the largest value the readable map can hold.
 */
struct blksnap_cbtinfo {
	__u64 device_capacity;
	__u32 block_size;
	__u32 block_count;
	struct blksnap_uuid generation_id;
	__u8 changes_number;
};

/**
 * struct blksnap_cbtmap - argument of &blkfilter_ctl_blksnap_cbtmap
 * @offset: index of the first map byte (tracking block) to copy.
 * @length: size in bytes of the buffer at @buffer.
 * @buffer: user-space address of the output buffer.
 */
struct blksnap_cbtmap {
	__u32 offset;
	__u32 length;
	__u64 buffer;
};

/**
 * struct blksnap_sectors - a range of 512-byte sectors
 * @offset: first sector of the range.
 * @count: number of sectors in the range.
 */
struct blksnap_sectors {
	__u64 offset;
	__u64 count;
};

/**
 * struct blksnap_cbtdirty - argument of &blkfilter_ctl_blksnap_cbtdirty
 * @count: number of elements of the array at @dirty_sectors.
 * @dirty_sectors: user-space address of an array of
 *	&struct blksnap_sectors to mark as changed.
 */
struct blksnap_cbtdirty {
	__u32 count;
	__u64 dirty_sectors;
};

/**
 * struct blksnap_snapshotadd - argument of &blkfilter_ctl_blksnap_snapshotadd
 * @id: identifier of the snapshot, as returned by
 *	IOCTL_BLKSNAP_SNAPSHOT_CREATE.
 */
struct blksnap_snapshotadd {
	struct blksnap_uuid id;
};

/* Size of &struct blksnap_snapshotinfo.image. */
#define IMAGE_DISK_NAME_LEN 32

/**
 * struct blksnap_snapshotinfo - output of &blkfilter_ctl_blksnap_snapshotinfo
 * @error_code: zero while the device's snapshot is sound; otherwise the
 *	negative errno that made it unusable (-ENOSPC when the difference
 *	storage ran out).  Cleared when the device joins a new snapshot.
 * @image: NUL-terminated name of the snapshot image disk once the snapshot
 *	is taken, an empty string before.
 */
struct blksnap_snapshotinfo {
	__s32 error_code;
	__u8 image[IMAGE_DISK_NAME_LEN];
};

/**
 * enum blksnap_ioctl - command numbers of the ioctls of the control device
 * @blksnap_ioctl_version: see IOCTL_BLKSNAP_VERSION.
 * @blksnap_ioctl_snapshot_create: see IOCTL_BLKSNAP_SNAPSHOT_CREATE.
 * @blksnap_ioctl_snapshot_destroy: see IOCTL_BLKSNAP_SNAPSHOT_DESTROY.
 * @blksnap_ioctl_snapshot_take: see IOCTL_BLKSNAP_SNAPSHOT_TAKE.
 * @blksnap_ioctl_snapshot_collect: see IOCTL_BLKSNAP_SNAPSHOT_COLLECT.
 * @blksnap_ioctl_snapshot_wait_event: see IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT.
 * @blksnap_ioctl_snapshot_events: see IOCTL_BLKSNAP_SNAPSHOT_EVENTS (an
 *	extension of the v6 interface).
 */
enum blksnap_ioctl {
	blksnap_ioctl_version,
	blksnap_ioctl_snapshot_create,
	blksnap_ioctl_snapshot_destroy,
	blksnap_ioctl_snapshot_take,
	blksnap_ioctl_snapshot_collect,
	blksnap_ioctl_snapshot_wait_event,
	blksnap_ioctl_snapshot_events,
};

/**
 * struct blksnap_version - version of the blksnap interface
 * @major: major version.
 * @minor: minor version.
 * @revision: revision.
 * @build: build number, zero for kernel builds.
 */
struct blksnap_version {
	__u16 major;
	__u16 minor;
	__u16 revision;
	__u16 build;
};

/*
 * IOCTL_BLKSNAP_VERSION - read the interface version.
 *
 * Meant for logs and diagnostics.  New behaviour comes with new ioctl
 * numbers, so user space should not decide what to call from the version.
 */
#define IOCTL_BLKSNAP_VERSION \
	_IOR(BLKSNAP, blksnap_ioctl_version, struct blksnap_version)

/**
 * struct blksnap_snapshot_create - argument of IOCTL_BLKSNAP_SNAPSHOT_CREATE
 * @diff_storage_limit_sect: largest size, in 512-byte sectors, the
 *	difference storage may grow to.
 * @diff_storage_fd: open file descriptor of the difference storage: a
 *	regular file (possibly an unnamed O_TMPFILE one) or a block device.
 *	The kernel takes its own reference, so the caller may close it as
 *	soon as the call returns.
 * @id: on output, the identifier of the new snapshot.
 */
struct blksnap_snapshot_create {
	__u64 diff_storage_limit_sect;
	__u32 diff_storage_fd;
	struct blksnap_uuid id;
};

/*
 * IOCTL_BLKSNAP_SNAPSHOT_CREATE - create an empty snapshot.
 *
 * Devices are then added with &blkfilter_ctl_blksnap_snapshotadd and the
 * snapshot is taken with IOCTL_BLKSNAP_SNAPSHOT_TAKE.  Several snapshots may
 * exist at once, but a device belongs to at most one of them, and the device
 * holding the difference storage cannot belong to any.  A regular file used
 * as difference storage is grown on demand, up to the limit.
 */
#define IOCTL_BLKSNAP_SNAPSHOT_CREATE \
	_IOWR(BLKSNAP, blksnap_ioctl_snapshot_create, \
	      struct blksnap_snapshot_create)

/*
 * IOCTL_BLKSNAP_SNAPSHOT_DESTROY - destroy a snapshot.
 *
 * The argument is the snapshot's &struct blksnap_uuid.  The image disks go
 * away and the difference storage is released; change tracking of the
 * devices goes on.
 */
#define IOCTL_BLKSNAP_SNAPSHOT_DESTROY \
	_IOW(BLKSNAP, blksnap_ioctl_snapshot_destroy, struct blksnap_uuid)

/*
 * IOCTL_BLKSNAP_SNAPSHOT_TAKE - take a snapshot.
 *
 * The argument is the snapshot's &struct blksnap_uuid.  All its devices are
 * captured at the same instant: their image disks appear, and their change
 * trackers start a new changes number.
 */
#define IOCTL_BLKSNAP_SNAPSHOT_TAKE \
	_IOW(BLKSNAP, blksnap_ioctl_snapshot_take, struct blksnap_uuid)

/**
 * struct blksnap_snapshot_collect - argument of
 *	IOCTL_BLKSNAP_SNAPSHOT_COLLECT
 * @count: on input, the number of elements the array at @ids can hold; on
 *	output, the number of snapshots that exist.
 * @ids: user-space address of an array of &struct blksnap_uuid, or 0.
 */
struct blksnap_snapshot_collect {
	__u32 count;
	__u64 ids;
};

/*
 * IOCTL_BLKSNAP_SNAPSHOT_COLLECT - list the existing snapshots.
 *
 * Called with a zero @count (and @ids 0) it only reports how many snapshots
 * exist.  If the array is too small the call fails with ENODATA and sets
 * @count to the number needed.
 */
#define IOCTL_BLKSNAP_SNAPSHOT_COLLECT \
	_IOR(BLKSNAP, blksnap_ioctl_snapshot_collect, \
	     struct blksnap_snapshot_collect)

/**
 * enum blksnap_event_codes - codes of &struct blksnap_snapshot_event.code
 * @blksnap_event_code_corrupted: the snapshot image of a device became
 *	unusable (for instance the difference storage could not hold a chunk
 *	that had to be preserved); the data is a
 *	&struct blksnap_event_corrupted.  Reads of that image fail from then
 *	on, but a backup that had already read everything it needed is sound.
 * @blksnap_event_code_no_space: the difference storage has reached its limit
 *	(or a file system that cannot grow it) and less than half of
 *	``diff_storage_minimum`` (or of the limit, if smaller) is left in it;
 *	the data is a
 *	&struct blksnap_event_no_space.  Queued once per snapshot.  The
 *	snapshot still works: it breaks only if the storage overflows.  An
 *	extension of the v6 interface, after the v7 proposal: delivered only
 *	to a client that asked for it with IOCTL_BLKSNAP_SNAPSHOT_EVENTS, so
 *	that a v6 client sees only the events v6 delivers.
 */
enum blksnap_event_codes {
	blksnap_event_code_corrupted,
	blksnap_event_code_no_space,
};

/**
 * struct blksnap_snapshot_event - argument of
 *	IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT
 * @id: identifier of the snapshot to wait on.
 * @timeout_ms: how long to wait, in milliseconds.
 * @code: on output, the event code (&enum blksnap_event_codes).
 * @time_label: on output, when the event happened (kernel time stamp).
 * @data: on output, the event's payload, which depends on @code.
 */
struct blksnap_snapshot_event {
	struct blksnap_uuid id;
	__u32 timeout_ms;
	__u32 code;
	__s64 time_label;
	__u8 data[4096 - 32];
};

/*
 * IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT - wait for the next event of a snapshot.
 *
 * The sleep is interruptible.  Fails with ENOENT when the timeout expires
 * without an event, EINTR when a signal arrives, and ESRCH when the snapshot
 * does not exist (any more).
 */
#define IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT \
	_IOR(BLKSNAP, blksnap_ioctl_snapshot_wait_event, \
	     struct blksnap_snapshot_event)

/**
 * struct blksnap_event_corrupted - payload of &blksnap_event_code_corrupted
 * @dev_id_mj: major number of the original device.
 * @dev_id_mn: minor number of the original device.
 * @err_code: the errno that corrupted the image, as a positive number (as
 *	blksnap v6 reports it), for strerror().
 */
struct blksnap_event_corrupted {
	__u32 dev_id_mj;
	__u32 dev_id_mn;
	__s32 err_code;
};

/**
 * struct blksnap_event_no_space - payload of &blksnap_event_code_no_space
 * @used_sect: sectors of the difference storage in use.
 * @limit_sect: sectors the difference storage may hold.
 */
struct blksnap_event_no_space {
	__u64 used_sect;
	__u64 limit_sect;
};

/**
 * struct blksnap_snapshot_events - argument of IOCTL_BLKSNAP_SNAPSHOT_EVENTS
 * @id: identifier of the snapshot.
 * @mask: the event codes to deliver, bit N for code N of
 *	&enum blksnap_event_codes.  &blksnap_event_code_corrupted is always
 *	delivered, whether its bit is set or not.
 */
struct blksnap_snapshot_events {
	struct blksnap_uuid id;
	__u64 mask;
};

/*
 * IOCTL_BLKSNAP_SNAPSHOT_EVENTS - choose the events of a snapshot beyond
 * &blksnap_event_code_corrupted.
 *
 * An extension of the v6 interface.  A snapshot delivers only the
 * corrupted event until a client asks for more; a condition met before the
 * call (the storage low on space for good) is reported right after it.
 * Fails with EINVAL for a bit of a code the kernel does not know (so a
 * client can probe what it supports), and ESRCH when the snapshot does not
 * exist.
 */
#define IOCTL_BLKSNAP_SNAPSHOT_EVENTS \
	_IOW(BLKSNAP, blksnap_ioctl_snapshot_events, \
	     struct blksnap_snapshot_events)

#endif /* _UAPI_LINUX_BLKSNAP_H */
