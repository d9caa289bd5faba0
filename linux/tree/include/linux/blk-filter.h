/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Block device filters: the in-kernel interface.
 *
 * A filter sees the bios submitted to a block device before the device
 * does. It is attached to a device on the fly through BLKFILTER_ATTACH
 * (see <uapi/linux/blk-filter.h>) and can take a bio over, or let it go on
 * to the device.
 */
#ifndef _LINUX_BLK_FILTER_H
#define _LINUX_BLK_FILTER_H

#include <linux/list.h>
#include <linux/types.h>
#include <uapi/linux/blk-filter.h>

struct bio;
struct block_device;
struct module;
struct blkfilter_operations;

/**
 * struct blkfilter - a filter attached to a block device
 * @ops: the operations of the filter type that created it
 *
 * The filter type embeds this structure in its own per-device state, which
 * it allocates in @ops->attach. The core frees nothing: it calls @ops->detach
 * once the filter is unpublished and no @ops->submit_bio call is running.
 */
struct blkfilter {
	const struct blkfilter_operations *ops;
};

/**
 * struct blkfilter_operations - a filter type
 * @link: entry in the list of registered filter types (core use)
 * @owner: module implementing the filter type
 * @name: unique name, at most BLKFILTER_NAME_LENGTH bytes
 * @attach: create the filter state for @bdev. Called with the queue of the
 *	device frozen (and the file system on it frozen, if one is mounted);
 *	may sleep. Returns the new filter or an ERR_PTR.
 * @detach: release the filter state. Called once, in process context, after
 *	BLKFILTER_DETACH or when the device goes away; no @submit_bio call is
 *	running or will be made by then.
 *	It may run in the context of a bio submitter, or with the disk's
 *	open_mutex held (partition removal), so it must not open or close
 *	block devices synchronously; work the filter started on bios it took
 *	over is its own to finish or cancel here.
 * @ctl: a BLKFILTER_CTL command. @buf is the user buffer, *@plen its size on
 *	entry and the length used (or needed) on return. Serialized with
 *	attach and detach of the same device; may sleep.
 * @submit_bio: see a bio before the device does. Called in the context of
 *	the submitter, outside of any lock, with sectors relative to the start
 *	of the filtered device (before partition remapping). Returns true when
 *	the filter has taken the bio over (it will complete it, or resubmit it
 *	with blkfilter_submit_bio_direct()), false to let it go on to the
 *	device. A bio is offered to the filter of a device at most once.
 */
struct blkfilter_operations {
	struct list_head link;
	struct module *owner;
	const char *name;
	struct blkfilter *(*attach)(struct block_device *bdev);
	void (*detach)(struct blkfilter *flt);
	int (*ctl)(struct blkfilter *flt, unsigned int cmd, __u8 __user *buf,
		   __u32 *plen);
	bool (*submit_bio)(struct blkfilter *flt, struct bio *bio);
};

int blkfilter_register(struct blkfilter_operations *ops);
void blkfilter_unregister(struct blkfilter_operations *ops);

/**
 * blkfilter_init - initialize the core part of a filter in @ops->attach
 * @flt: the filter
 * @ops: its filter type
 */
static inline void blkfilter_init(struct blkfilter *flt,
				  const struct blkfilter_operations *ops)
{
	flt->ops = ops;
}

/*
 * blkfilter_submit_bio_direct - submit a bio that the filter must not see
 * again: bios a filter issues itself (copy-on-write reads, a bio it has
 * examined and resubmits) go to the device through this call. The bio skips
 * the filter of its bi_bdev only; if it is later moved to another device
 * with bio_set_dev(), that device's filter sees it.
 */
void blkfilter_submit_bio_direct(struct bio *bio);

#endif /* _LINUX_BLK_FILTER_H */
