/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Block device filters: the in-kernel interface.
 *
 * A filter sees the bios submitted to a block device before the device
 * does. It is attached to a device on the fly through BLKFILTER_ATTACH
 * (see <uapi/linux/blk-filter.h>) or blkfilter_attach(), and can take a bio
 * over, or let it go on to the device.
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
 * @ops: the operations of the filter type that created it; set by the core
 *	after @ops->attach has returned the filter
 *
 * The filter type embeds this structure in its own per-device state, which
 * it allocates in @ops->attach. The core frees nothing: it calls @ops->detach
 * once the filter is unpublished and no @ops->submit_bio call is running.
 */
struct blkfilter {
	struct blkfilter_operations *ops;
};

/**
 * struct blkfilter_operations - a filter type
 * @link: entry in the list of registered filter types (core use)
 * @users: attaches in progress and filters attached (core use)
 * @owner: module implementing the filter type
 * @name: unique name, at most BLKFILTER_NAME_LENGTH bytes
 * @attach: create the filter state for @bdev and return the &struct blkfilter
 *	embedded in it, or an ERR_PTR. Called in process context without any
 *	lock of the core held and before the filter is published: the device
 *	is neither frozen nor quiesced, I/O to it goes on meanwhile and is not
 *	seen by the filter. May sleep, allocate with GFP_KERNEL and do I/O on
 *	@bdev. The core sets the @ops field of the returned filter itself.
 *	If the filter cannot be published after all (the device went away,
 *	another filter was attached meanwhile, or freezing the file system on
 *	@bdev failed), @detach is called for it without it having seen a bio.
 * @detaching: optional; the filter is about to be unpublished from its
 *	device, by BLKFILTER_DETACH or because the device goes away. Called
 *	once, in process context, with the device's filter lock held (so it
 *	is ordered with blkfilter_lock() holders and @ctl) and while
 *	@submit_bio is still called. A filter that does work which a device
 *	must not be without (copy-on-write of a snapshot, say) ends it here,
 *	before a bio can pass the device unfiltered. Must not sleep for I/O.
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
 *	the submitter, outside of any lock, inside a read-side section of the
 *	core's SRCU (so it must not call blkfilter_fence() or detach a filter
 *	and wait for that). The sectors of the bio are relative to the start
 *	of the device the filter is attached to. For a filter on a whole disk,
 *	bio->bi_bdev may be a partition of that disk: the bio was submitted to
 *	the partition, has been remapped to the whole disk already, and its
 *	sectors are those of the whole disk. Returns true when the filter has
 *	taken the bio over (it will complete it, or resubmit it with
 *	blkfilter_submit_bio_direct()), false to let it go on to the device.
 *	A bio is offered to the filter of a device at most once; bios split
 *	off or cloned from it on the same device (bio_split(),
 *	bio_alloc_clone()) are not offered again either.
 */
struct blkfilter_operations {
	struct list_head link;
	atomic_t users;
	struct module *owner;
	const char *name;
	struct blkfilter *(*attach)(struct block_device *bdev);
	void (*detaching)(struct blkfilter *flt);
	void (*detach)(struct blkfilter *flt);
	int (*ctl)(struct blkfilter *flt, unsigned int cmd, __u8 __user *buf,
		   __u32 *plen);
	bool (*submit_bio)(struct blkfilter *flt, struct bio *bio);
};

int blkfilter_register(struct blkfilter_operations *ops);
void blkfilter_unregister(struct blkfilter_operations *ops);

int blkfilter_attach(struct block_device *bdev, const char *name);
int blkfilter_detach(struct block_device *bdev, const char *name);

struct blkfilter *blkfilter_lock(struct block_device *bdev,
				 const struct blkfilter_operations *ops);
void blkfilter_unlock(struct block_device *bdev);

void blkfilter_fence(void);
void blkfilter_drain_prepare(struct block_device *const *bdevs,
			     unsigned int nr);
void blkfilter_drain_cancel(struct block_device *const *bdevs,
			    unsigned int nr);
int blkfilter_drain(struct block_device *const *bdevs, unsigned int nr,
		    unsigned int timeout_ms);

/*
 * blkfilter_submit_bio_direct - submit a bio that the filter must not see
 * again: bios a filter issues itself (copy-on-write reads, a bio it has
 * examined and resubmits) go to the device through this call. The bio skips
 * the filter of its bi_bdev only; if it is later moved to another device
 * with bio_set_dev(), that device's filter sees it.
 */
void blkfilter_submit_bio_direct(struct bio *bio);

#endif /* _LINUX_BLK_FILTER_H */
