// SPDX-License-Identifier: GPL-2.0
/*
 * Block device filters: the registry of filter types, attaching a filter to a
 * block device and detaching it, filter commands, and the hook through which
 * a filter sees the bios of its device.
 *
 * Lifetime and ordering
 * ---------------------
 * A filter is published in bdev->bd_filter with rcu_assign_pointer() once
 * ops->attach() has fully set it up, and is read without any lock by the bio
 * hook and the sysfs attribute, inside a read-side section of
 * blkfilter_srcu. The release barrier of rcu_assign_pointer() pairs with the
 * dependency ordering of srcu_dereference(): a reader that sees the pointer
 * also sees the ops and the filter's private state.
 *
 * SRCU rather than RCU because ops->submit_bio() may sleep, and the fast
 * flavour because its readers only increment a per-CPU counter: a filtered
 * bio costs no atomic operation on a shared cache line and no memory barrier.
 * Detaching clears the pointer under bd_filter_lock and waits for an SRCU
 * grace period: every reader that saw the pointer has left its read-side
 * section by then, so no ops->submit_bio() call is running and none can
 * start, and ops->detach() releases the filter. The owner module's reference
 * is dropped after ops->detach() has returned.
 *
 * While no filter is attached anywhere, the static key blkfilter_in_use is
 * off and submit_bio_noacct() does not even load bd_filter. Each attached
 * filter holds one increment of the key.
 */
#include <linux/bio.h>
#include <linux/blk-filter.h>
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/jump_label.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/srcu.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include "blk.h"

DEFINE_STATIC_KEY_FALSE(blkfilter_in_use);

/* Readers of bdev->bd_filter: the bio hook and the sysfs attribute. */
DEFINE_STATIC_SRCU_FAST(blkfilter_srcu);

/* The registered filter types, by name. */
static LIST_HEAD(blkfilter_types);
static DEFINE_MUTEX(blkfilter_types_lock);

static struct blkfilter_operations *blkfilter_find_locked(const char *name)
{
	struct blkfilter_operations *ops;

	lockdep_assert_held(&blkfilter_types_lock);
	list_for_each_entry(ops, &blkfilter_types, link)
		if (!strcmp(ops->name, name))
			return ops;
	return NULL;
}

/**
 * blkfilter_register - make a filter type available for attaching
 * @ops: the filter type; @ops->name must be unique
 *
 * Return: 0, -EINVAL for an incomplete @ops or a bad name, or -EBUSY when a
 * filter type of that name is already registered.
 */
int blkfilter_register(struct blkfilter_operations *ops)
{
	size_t len;
	int ret = 0;

	if (!ops->name || !ops->attach || !ops->detach || !ops->submit_bio)
		return -EINVAL;
	len = strnlen(ops->name, BLKFILTER_NAME_LENGTH + 1);
	if (!len || len > BLKFILTER_NAME_LENGTH)
		return -EINVAL;

	mutex_lock(&blkfilter_types_lock);
	if (blkfilter_find_locked(ops->name))
		ret = -EBUSY;
	else
		list_add_tail(&ops->link, &blkfilter_types);
	mutex_unlock(&blkfilter_types_lock);
	return ret;
}
EXPORT_SYMBOL_GPL(blkfilter_register);

/**
 * blkfilter_unregister - withdraw a filter type
 * @ops: a registered filter type
 *
 * New attaches of @ops fail from now on. Attached filters hold a reference
 * on @ops->owner, so a module cannot get here while one of its filters is
 * still attached.
 */
void blkfilter_unregister(struct blkfilter_operations *ops)
{
	mutex_lock(&blkfilter_types_lock);
	list_del_init(&ops->link);
	mutex_unlock(&blkfilter_types_lock);
}
EXPORT_SYMBOL_GPL(blkfilter_unregister);

/* Look up a filter type and pin its module. */
static const struct blkfilter_operations *blkfilter_get_type(const char *name)
{
	struct blkfilter_operations *ops;

	mutex_lock(&blkfilter_types_lock);
	ops = blkfilter_find_locked(name);
	if (ops && !try_module_get(ops->owner))
		ops = NULL;
	mutex_unlock(&blkfilter_types_lock);
	return ops;
}

static struct blkfilter *blkfilter_get_locked(struct block_device *bdev)
{
	return rcu_dereference_protected(bdev->bd_filter,
				lockdep_is_held(&bdev->bd_filter_lock));
}

/*
 * Whether @bdev may still get a filter. The removal paths make the device
 * look dead (inode unhashed, GD_DEAD, partition erased from part_tbl) before
 * they call blkfilter_detach_dead(), which takes bd_filter_lock. An attach
 * checks under that lock, so either it sees the device dead, or its filter
 * is published before the detach looks and is removed by it.
 */
static bool blkfilter_bdev_alive(struct block_device *bdev)
{
	struct gendisk *disk = bdev->bd_disk;

	if (!disk_live(disk) || test_bit(GD_DEAD, &disk->state))
		return false;
	if (bdev_is_partition(bdev))
		return xa_load(&disk->part_tbl, bdev_partno(bdev)) == bdev;
	return true;
}

/* Whether @ops may be attached to @bdev now; 0 or the error to return. */
static int blkfilter_can_attach(struct block_device *bdev,
				const struct blkfilter_operations *ops)
{
	struct blkfilter *cur = blkfilter_get_locked(bdev);

	if (cur)
		return cur->ops == ops ? -EALREADY : -EBUSY;
	if (!blkfilter_bdev_alive(bdev))
		return -ENODEV;
	return 0;
}

/**
 * blkfilter_attach - attach a filter of the named type to a block device
 * @bdev: the block device
 * @name: the filter type, a NUL-terminated string
 *
 * The file system on @bdev, if any, and the queue are frozen while the
 * filter is created, so that it starts on a quiescent device.
 *
 * Return: 0; -ENOENT for an unknown type; -EALREADY when a filter of that
 * type is attached already, -EBUSY when one of another type is; -ENODEV when
 * the device is going away; or the error of freezing or of @ops->attach.
 */
int blkfilter_attach(struct block_device *bdev, const char *name)
{
	const struct blkfilter_operations *ops;
	struct request_queue *q = bdev_get_queue(bdev);
	struct blkfilter *flt;
	unsigned int memflags;
	int ret;

	ops = blkfilter_get_type(name);
	if (!ops)
		return -ENOENT;

	/* Fail early without disturbing the file system. */
	mutex_lock(&bdev->bd_filter_lock);
	ret = blkfilter_can_attach(bdev, ops);
	mutex_unlock(&bdev->bd_filter_lock);
	if (ret)
		goto out_put_type;

	/*
	 * The file system is frozen before bd_filter_lock is taken: freezing
	 * takes s_umount, which ranks above the disk's open_mutex, and that
	 * ranks above bd_filter_lock (see drop_partition()).
	 */
	ret = bdev_freeze(bdev);
	if (ret)
		goto out_put_type;

	mutex_lock(&bdev->bd_filter_lock);
	ret = blkfilter_can_attach(bdev, ops);
	if (ret)
		goto out_unlock;

	/* Patch the hook in before the queue is frozen. */
	static_branch_inc(&blkfilter_in_use);

	memflags = blk_mq_freeze_queue(q);
	flt = ops->attach(bdev);
	if (IS_ERR(flt)) {
		ret = PTR_ERR(flt);
	} else if (WARN_ON_ONCE(!flt || flt->ops != ops)) {
		/* ops->attach did not blkfilter_init() what it returned */
		ret = -EINVAL;
	} else {
		rcu_assign_pointer(bdev->bd_filter, flt);
	}
	blk_mq_unfreeze_queue(q, memflags);

	if (ret)
		static_branch_dec(&blkfilter_in_use);
out_unlock:
	mutex_unlock(&bdev->bd_filter_lock);
	bdev_thaw(bdev);
out_put_type:
	/* On success the module reference moves to the filter. */
	if (ret)
		module_put(ops->owner);
	return ret;
}

/* Release a filter that is no longer published. */
static void blkfilter_retire(struct blkfilter *flt)
{
	struct module *owner = flt->ops->owner;

	/* Wait for every reader that may have seen the pointer. */
	synchronize_srcu(&blkfilter_srcu);
	static_branch_dec(&blkfilter_in_use);
	flt->ops->detach(flt);
	module_put(owner);
}

/**
 * blkfilter_detach - detach the filter of the named type from a block device
 * @bdev: the block device
 * @name: the filter type, a NUL-terminated string
 *
 * Once this returns, no bio of @bdev is in @ops->submit_bio or reaches it,
 * and @ops->detach has been called.
 *
 * Return: 0, or -ENOENT when no filter of that type is attached.
 */
int blkfilter_detach(struct block_device *bdev, const char *name)
{
	struct blkfilter *flt;

	mutex_lock(&bdev->bd_filter_lock);
	flt = blkfilter_get_locked(bdev);
	if (!flt || strcmp(flt->ops->name, name)) {
		mutex_unlock(&bdev->bd_filter_lock);
		return -ENOENT;
	}
	RCU_INIT_POINTER(bdev->bd_filter, NULL);
	mutex_unlock(&bdev->bd_filter_lock);

	blkfilter_retire(flt);
	return 0;
}

/*
 * blkfilter_detach_dead - detach whatever filter @bdev has, because the
 * device is going away (disk deletion, partition removal, media change)
 */
void blkfilter_detach_dead(struct block_device *bdev)
{
	struct blkfilter *flt;

	mutex_lock(&bdev->bd_filter_lock);
	flt = blkfilter_get_locked(bdev);
	RCU_INIT_POINTER(bdev->bd_filter, NULL);
	mutex_unlock(&bdev->bd_filter_lock);

	if (flt)
		blkfilter_retire(flt);
}

/**
 * blkfilter_ctl - send a command to the filter attached to a block device
 * @bdev: the block device
 * @name: the filter type the command is meant for
 * @cmd: the command, defined by the filter type
 * @buf: user-space argument buffer
 * @plen: size of @buf on entry, length used or needed on return
 *
 * Serialized with attach and detach of @bdev.
 *
 * Return: -ENOENT when no filter of that type is attached, -EOPNOTSUPP when
 * the type takes no commands, otherwise what @ops->ctl returns.
 */
int blkfilter_ctl(struct block_device *bdev, const char *name,
		  unsigned int cmd, __u8 __user *buf, __u32 *plen)
{
	struct blkfilter *flt;
	int ret;

	mutex_lock(&bdev->bd_filter_lock);
	flt = blkfilter_get_locked(bdev);
	if (!flt || strcmp(flt->ops->name, name))
		ret = -ENOENT;
	else if (!flt->ops->ctl)
		ret = -EOPNOTSUPP;
	else
		ret = flt->ops->ctl(flt, cmd, buf, plen);
	mutex_unlock(&bdev->bd_filter_lock);
	return ret;
}

/* The sysfs "filter" attribute: the name of the attached filter's type. */
ssize_t blkfilter_show(struct block_device *bdev, char *buf)
{
	struct blkfilter *flt;
	ssize_t ret;

	struct srcu_ctr __percpu *scp;

	/* The grace period before ops->detach keeps flt and ops alive here. */
	scp = srcu_read_lock_fast(&blkfilter_srcu);
	flt = srcu_dereference(bdev->bd_filter, &blkfilter_srcu);
	ret = sysfs_emit(buf, "%s\n", flt ? flt->ops->name : "");
	srcu_read_unlock_fast(&blkfilter_srcu, scp);
	return ret;
}

/*
 * The bio hook, reached from submit_bio_noacct() only while some filter is
 * attached somewhere.
 *
 * BIO_FILTERED is the recursion guard: it is set on a bio before the filter
 * of its device sees it, and by blkfilter_submit_bio_direct(), so a bio
 * passes through the filter of a given device at most once, whether the
 * filter lets it go on, resubmits it itself, or issues it as a new bio of its
 * own. bio_set_dev() clears the flag when a bio moves to another device, whose
 * filter then sees it. A bio that has been remapped to the whole disk already
 * (BIO_REMAPPED) is not offered again: its sectors no longer are those of the
 * partition.
 */
bool __blkfilter_bio(struct bio *bio)
{
	struct block_device *bdev = bio->bi_bdev;
	struct srcu_ctr __percpu *scp;
	struct blkfilter *flt;
	bool taken = false;

	if (bio_flagged(bio, BIO_FILTERED) || bio_flagged(bio, BIO_REMAPPED))
		return false;

	scp = srcu_read_lock_fast(&blkfilter_srcu);
	flt = srcu_dereference(bdev->bd_filter, &blkfilter_srcu);
	if (flt) {
		bio_set_flag(bio, BIO_FILTERED);
		taken = flt->ops->submit_bio(flt, bio);
	}
	srcu_read_unlock_fast(&blkfilter_srcu, scp);
	return taken;
}

/**
 * blkfilter_submit_bio_direct - submit a bio past the filter of its device
 * @bio: the bio
 *
 * For the bios a filter issues itself and for those it took over and lets go
 * on: the filter of bio->bi_bdev does not see @bio again.
 */
void blkfilter_submit_bio_direct(struct bio *bio)
{
	bio_set_flag(bio, BIO_FILTERED);
	submit_bio_noacct(bio);
}
EXPORT_SYMBOL_GPL(blkfilter_submit_bio_direct);

static int blkfilter_copy_name(char *name, const __u8 __user *uname)
{
	if (copy_from_user(name, uname, BLKFILTER_NAME_LENGTH))
		return -EFAULT;
	name[BLKFILTER_NAME_LENGTH] = '\0';
	return 0;
}

int blkfilter_ioctl_attach(struct block_device *bdev,
			   struct blkfilter_name __user *argp)
{
	char name[BLKFILTER_NAME_LENGTH + 1];
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	ret = blkfilter_copy_name(name, argp->name);
	if (ret)
		return ret;
	return blkfilter_attach(bdev, name);
}

int blkfilter_ioctl_detach(struct block_device *bdev,
			   struct blkfilter_name __user *argp)
{
	char name[BLKFILTER_NAME_LENGTH + 1];
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	ret = blkfilter_copy_name(name, argp->name);
	if (ret)
		return ret;
	return blkfilter_detach(bdev, name);
}

int blkfilter_ioctl_ctl(struct block_device *bdev,
			struct blkfilter_ctl __user *argp)
{
	char name[BLKFILTER_NAME_LENGTH + 1];
	struct blkfilter_ctl ctl;
	__u32 len;
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (copy_from_user(&ctl, argp, sizeof(ctl)))
		return -EFAULT;
	memcpy(name, ctl.name, BLKFILTER_NAME_LENGTH);
	name[BLKFILTER_NAME_LENGTH] = '\0';

	len = ctl.optlen;
	ret = blkfilter_ctl(bdev, name, ctl.cmd, u64_to_user_ptr(ctl.opt),
			    &len);
	/* Report the length used or needed, on failure too (e.g. -ENOSPC). */
	if (len != ctl.optlen && put_user(len, &argp->optlen) && !ret)
		ret = -EFAULT;
	return ret;
}
