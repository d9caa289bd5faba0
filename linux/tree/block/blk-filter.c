// SPDX-License-Identifier: GPL-2.0
/*
 * Block device filters: the registry of filter types, attaching a filter to a
 * block device and detaching it, filter commands, and the hooks through which
 * a filter sees the bios of its device.
 *
 * Lifetime and ordering
 * ---------------------
 * A filter is published in bdev->bd_filter with rcu_assign_pointer() once
 * ops->attach() has set it up and the core has set its ops, and is read
 * without any lock by the bio hooks and the sysfs attribute. A bio hook first
 * tests the pointer with rcu_access_pointer() and enters a read-side section
 * of blkfilter_srcu only when it is not NULL, re-reading it there with
 * srcu_dereference(): a bio of a device without a filter costs one load and
 * no read-side section, even while filters are attached elsewhere. The
 * release barrier of rcu_assign_pointer() pairs with the dependency ordering
 * of srcu_dereference(): a reader that sees the pointer also sees the ops and
 * the filter's private state.
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
 *
 * What attaching guarantees
 * -------------------------
 * ops->attach() runs before anything is frozen. blkfilter_attach() then
 * freezes the file system on the device (if one is mounted), publishes the
 * filter, waits for an SRCU grace period, freezes the queue and unfreezes it
 * at once, and thaws the file system. When it has returned:
 *
 * - every bio submitted to the device from then on is offered to the filter
 *   (bios it resubmits or issues past itself excepted, see __blkfilter_bio());
 * - every hook that had found a filter pointer and entered the read-side
 *   section has returned. A submitter that found no filter did not enter
 *   the section, as that is the fast path; the grace period does not wait
 *   for it, only the queue freeze below fences it;
 * - every bio that had entered the queue (bio_queue_enter()) when the freeze
 *   began has left it: on a blk-mq device it has completed; on a bio-based
 *   device the driver's ->submit_bio() has returned, though the driver may
 *   still hold the bio.
 *
 * Not fenced, and the remaining window: a bio whose submitter found no filter
 * in the hook but had not yet entered the queue when the freeze began, for
 * instance because it was preempted between the two. It waits for the
 * unfreeze in bio_queue_enter() and then reaches the device unfiltered,
 * possibly after blkfilter_attach() has returned. The same holds for the
 * remainder that the block layer splits off a bio submitted to a partition
 * before the filter was published: it is resubmitted remapped and does not
 * pass the hooks again. File systems mounted on the device are frozen, so
 * their writes are not in that window; a filter on a whole disk does not
 * freeze the file systems on its partitions.
 *
 * The hook was not moved behind bio_queue_enter(), which would close the
 * window, for two reasons. Partition remapping: by then a bio submitted to a
 * partition carries whole-disk sectors, and a partition's filter must see its
 * own. Per-bio cost: blk-mq enters the queue inside blk_mq_submit_bio() and
 * bio-based drivers in __submit_bio(), so the check would sit in both paths
 * and a bio the filter takes over would hold a queue reference while the
 * filter sleeps or issues its own I/O to the same queue; a queue freeze would
 * then wait for the filter's work.
 */
#include <kunit/static_stub.h>
#include <linux/bio.h>
#include <linux/blk-filter.h>
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/delay.h>
#include <linux/jump_label.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu-refcount.h>
#include <linux/rcupdate.h>
#include <linux/srcu.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/wait_bit.h>
#include "blk.h"

DEFINE_STATIC_KEY_FALSE(blkfilter_in_use);

/* Readers of bdev->bd_filter: the bio hooks and the sysfs attribute. */
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
 * New attaches of @ops fail from now on. Then waits until no attach of @ops
 * is in progress and no filter of @ops is attached any more, so that the
 * caller may free @ops when this returns. Attached filters hold a reference
 * on @ops->owner, so a module's exit does not get here while one of its
 * filters is attached; other callers wait until the filters are detached.
 */
void blkfilter_unregister(struct blkfilter_operations *ops)
{
	mutex_lock(&blkfilter_types_lock);
	list_del_init(&ops->link);
	mutex_unlock(&blkfilter_types_lock);
	wait_var_event(&ops->users, !atomic_read(&ops->users));
}
EXPORT_SYMBOL_GPL(blkfilter_unregister);

/*
 * Look up a filter type, pin its module and count a user of it: an attach in
 * progress, then the attached filter.
 */
static struct blkfilter_operations *blkfilter_get_type(const char *name)
{
	struct blkfilter_operations *ops;

	mutex_lock(&blkfilter_types_lock);
	ops = blkfilter_find_locked(name);
	if (ops && !try_module_get(ops->owner))
		ops = NULL;
	if (ops)
		atomic_inc(&ops->users);
	mutex_unlock(&blkfilter_types_lock);
	return ops;
}

/*
 * Drop what blkfilter_get_type() took. @ops may be freed by the unregister
 * it wakes up: only the address of the counter is used after the decrement.
 */
static void blkfilter_put_type(struct blkfilter_operations *ops)
{
	struct module *owner = ops->owner;

	if (atomic_dec_and_test(&ops->users))
		wake_up_var(&ops->users);
	module_put(owner);
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

/*
 * Whether @ops may be attached to @bdev now; 0 or the error to return, in the
 * order of the v6 interface: -ENODEV, then -EALREADY or -EBUSY.
 */
static int blkfilter_can_attach(struct block_device *bdev,
				const struct blkfilter_operations *ops)
{
	struct blkfilter *cur = blkfilter_get_locked(bdev);

	if (!blkfilter_bdev_alive(bdev))
		return -ENODEV;
	if (cur)
		return cur->ops == ops ? -EALREADY : -EBUSY;
	return 0;
}

/**
 * blkfilter_fence - wait for the submit_bio calls of all filters
 *
 * After a filter changes state that its @ops->submit_bio reads (for example,
 * turning on copy-on-write when a snapshot is taken), this waits until every
 * @ops->submit_bio call that may have seen the old state has returned: every
 * call that began before blkfilter_fence() was called has returned, and every
 * call that begins after it returns sees what the caller stored before
 * calling it. It waits for the calls of every filter on every device, as
 * they share one SRCU domain.
 *
 * It does not wait for the bios that such a call let go on to the device
 * (returned false for) to reach the device or to complete; a filter that
 * needs that drains the device as well (blkfilter_drain()). It must not be called from
 * @ops->submit_bio, which would wait for itself.
 */
void blkfilter_fence(void)
{
	synchronize_srcu(&blkfilter_srcu);
}
EXPORT_SYMBOL_GPL(blkfilter_fence);

/**
 * blkfilter_drain_prepare - make a blkfilter_drain() of block devices short
 * @bdevs: the block devices
 * @nr: how many there are
 *
 * A queue freeze first switches the counter of the queue's users from
 * per-cpu to atomic mode, which waits for an RCU grace period: on an idle
 * device, that is most of the time blkfilter_drain() takes, and the caller
 * may be holding writes back then. This makes that switch beforehand, while
 * I/O still flows (counted in atomic mode, a little more slowly), so that
 * the drain then only waits for the I/O in flight. The counters go back to
 * per-cpu mode in blkfilter_drain() or blkfilter_drain_cancel(), one of
 * which the caller must call for the same devices. The switches start
 * together, so that the devices share one grace period.
 *
 * Context: May sleep.
 */
void blkfilter_drain_prepare(struct block_device *const *bdevs,
			     unsigned int nr)
{
	unsigned int i;

	for (i = 0; i < nr; i++)
		percpu_ref_switch_to_atomic(&bdev_get_queue(bdevs[i])->q_usage_counter,
					    NULL);
	for (i = 0; i < nr; i++)
		percpu_ref_switch_to_atomic_sync(&bdev_get_queue(bdevs[i])->q_usage_counter);
}
EXPORT_SYMBOL_GPL(blkfilter_drain_prepare);

/**
 * blkfilter_drain_cancel - undo blkfilter_drain_prepare() without a drain
 * @bdevs: the block devices
 * @nr: how many there are
 *
 * Switches the counters of the devices' queues back to per-cpu mode, in
 * which a registered queue counts its users (blk_register_queue()); an
 * unregistered one is left in atomic mode. blkfilter_drain() ends with it.
 *
 * Context: May sleep.
 */
void blkfilter_drain_cancel(struct block_device *const *bdevs,
			    unsigned int nr)
{
	unsigned int i;

	for (i = 0; i < nr; i++) {
		struct request_queue *q = bdev_get_queue(bdevs[i]);

		if (blk_queue_registered(q))
			percpu_ref_switch_to_percpu(&q->q_usage_counter);
	}
}
EXPORT_SYMBOL_GPL(blkfilter_drain_cancel);

/**
 * blkfilter_drain - wait for the writes in flight on block devices
 * @bdevs: the block devices
 * @nr: how many there are
 * @timeout_ms: how long to wait at most
 *
 * blkfilter_fence() waits for the @ops->submit_bio calls, not for the bios
 * they let go on. A filter that must know that the writes it let pass
 * before a change of its state have completed (taking a snapshot, say, whose
 * image must hold every write counted before it) calls this after it.
 *
 * This freezes the queue of each device and unfreezes it: on a blk-mq
 * device, every request that had entered the queue has completed then. The
 * freezes start together, so that the devices share the RCU grace period a
 * freeze waits for. On a bio-based device, a freeze only waits for the
 * driver's ->submit_bio() of the bios that had entered the queue to return,
 * so this then waits until the device counts no write in flight. That count
 * is the device's I/O accounting (its "inflight" sysfs attribute): a
 * bio-based driver that does not account its I/O, or that accounts a bio
 * only once it passes it on (dm-delay), is waited for only as far as it
 * counts. The count includes writes that come in meanwhile; the caller
 * should hold back the ones it can (the bios its filter takes over), or the
 * wait may last the whole timeout.
 *
 * The same window as for blkfilter_attach() stays open: a bio that passed
 * the hook but had not entered the queue yet may reach the device later.
 *
 * After blkfilter_drain_prepare(), the freezes need no grace period; the
 * queues' counters go back to per-cpu mode here either way.
 *
 * Context: May sleep; not from @ops->submit_bio.
 * Return: 0, or -ETIMEDOUT if writes were still in flight on one of the
 * devices after @timeout_ms in all (a request that never completes, say).
 */
int blkfilter_drain(struct block_device *const *bdevs, unsigned int nr,
		    unsigned int timeout_ms)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(timeout_ms);
	unsigned int i;
	int ret = 0;

	for (i = 0; i < nr; i++)
		blk_freeze_queue_start(bdev_get_queue(bdevs[i]));
	for (i = 0; i < nr; i++) {
		struct request_queue *q = bdev_get_queue(bdevs[i]);
		long left = time_after(jiffies, deadline) ? 0 : deadline - jiffies;

		if (!blk_mq_freeze_queue_wait_timeout(q, left))
			ret = -ETIMEDOUT;
		blk_mq_unfreeze_queue_nomemrestore(q);
	}
	blkfilter_drain_cancel(bdevs, nr);

	for (i = 0; i < nr && !ret; i++) {
		if (queue_is_mq(bdev_get_queue(bdevs[i])))
			continue;
		for (;;) {
			unsigned int inflight[2] = { 0, 0 };

			bdev_count_inflight_rw(bdevs[i], inflight, false);
			if (!inflight[WRITE])
				break;
			if (time_after(jiffies, deadline)) {
				ret = -ETIMEDOUT;
				break;
			}
			fsleep(1000);
		}
	}
	return ret;
}
EXPORT_SYMBOL_GPL(blkfilter_drain);

/**
 * blkfilter_attach - attach a filter of the named type to a block device
 * @bdev: the block device
 * @name: the filter type, a NUL-terminated string
 *
 * @ops->attach creates the filter first, with nothing frozen. Then the file
 * system on @bdev, if any, is frozen, the filter is published, and the bios
 * in flight are fenced as far as the hook allows: once this returns, every
 * bio submitted to @bdev is offered to the filter, every hook that had found
 * a filter has returned, and every bio that had entered the queue has left
 * it (completed, on blk-mq). A bio whose submitter passed the hook before the
 * filter was published but had not entered the queue yet may still reach
 * the device unfiltered afterwards; see the comment at the top of this file.
 *
 * Return: 0; -ENOENT for an unknown type; -ENODEV when the device is going
 * away; -EALREADY when a filter of that type is attached already, -EBUSY
 * when one of another type is; or the error of @ops->attach or of freezing.
 */
int blkfilter_attach(struct block_device *bdev, const char *name)
{
	struct request_queue *q = bdev_get_queue(bdev);
	struct blkfilter_operations *ops;
	struct blkfilter *flt;
	unsigned int memflags;
	int ret;

	ops = blkfilter_get_type(name);
	if (!ops)
		return -ENOENT;

	/* Fail early, before the filter is created. */
	mutex_lock(&bdev->bd_filter_lock);
	ret = blkfilter_can_attach(bdev, ops);
	mutex_unlock(&bdev->bd_filter_lock);
	if (ret)
		goto out_put_type;

	/* Nothing is locked or frozen: ops->attach may allocate and do I/O. */
	flt = ops->attach(bdev);
	if (IS_ERR_OR_NULL(flt)) {
		ret = flt ? PTR_ERR(flt) : -ENOMEM;
		goto out_put_type;
	}
	flt->ops = ops;

	/*
	 * The file system is frozen before bd_filter_lock is taken: freezing
	 * takes s_umount, which ranks above the disk's open_mutex, and that
	 * ranks above bd_filter_lock (see drop_partition()).
	 */
	ret = bdev_freeze(bdev);
	if (ret)
		goto out_release;

	/* The hook is patched in before a submitter can find the filter. */
	static_branch_inc(&blkfilter_in_use);
	mutex_lock(&bdev->bd_filter_lock);
	ret = blkfilter_can_attach(bdev, ops);
	if (!ret)
		rcu_assign_pointer(bdev->bd_filter, flt);
	mutex_unlock(&bdev->bd_filter_lock);
	if (ret) {
		static_branch_dec(&blkfilter_in_use);
		bdev_thaw(bdev);
		goto out_release;
	}

	/*
	 * The filter is published: from here on it may be detached at any
	 * time, so neither flt nor ops is touched again.
	 *
	 * First wait for the hooks that are in the read-side section; then
	 * drain what has entered the queue. Neither waits for a submitter that
	 * found no filter and has not entered the queue yet.
	 */
	blkfilter_fence();
	memflags = blk_mq_freeze_queue(q);
	blk_mq_unfreeze_queue(q, memflags);

	bdev_thaw(bdev);
	/* The module reference is the filter's now. */
	return 0;

out_release:
	/* Never published: no hook can have seen it. */
	ops->detach(flt);
out_put_type:
	blkfilter_put_type(ops);
	return ret;
}
EXPORT_SYMBOL_GPL(blkfilter_attach);

/*
 * Unpublish the filter @flt of @bdev, under bd_filter_lock. Its type is told
 * first, while its submit_bio is still called, so that it can end what the
 * device must not be without before a bio passes unfiltered.
 */
static void blkfilter_unpublish(struct block_device *bdev,
				struct blkfilter *flt)
{
	lockdep_assert_held(&bdev->bd_filter_lock);
	if (flt->ops->detaching)
		flt->ops->detaching(flt);
	RCU_INIT_POINTER(bdev->bd_filter, NULL);
}

/* Release a filter that is no longer published. */
static void blkfilter_retire(struct blkfilter *flt)
{
	struct blkfilter_operations *ops = flt->ops;

	/* Wait for every reader that may have seen the pointer. */
	synchronize_srcu(&blkfilter_srcu);
	static_branch_dec(&blkfilter_in_use);
	ops->detach(flt);
	blkfilter_put_type(ops);
}

/**
 * blkfilter_detach - detach the filter of the named type from a block device
 * @bdev: the block device
 * @name: the filter type, a NUL-terminated string
 *
 * Waits for bd_filter_lock, so a filter held with blkfilter_lock() stays
 * attached until blkfilter_unlock(). Once this returns, no bio of @bdev is in
 * @ops->submit_bio or reaches it, and @ops->detach has been called.
 *
 * Return: 0; -ENODEV when the device is going away (its filter, if any, is
 * detached by the removal); -ENOENT when no filter is attached; -EINVAL when
 * the attached filter is of another type.
 */
int blkfilter_detach(struct block_device *bdev, const char *name)
{
	struct blkfilter *flt;
	int ret = 0;

	mutex_lock(&bdev->bd_filter_lock);
	flt = blkfilter_get_locked(bdev);
	if (!blkfilter_bdev_alive(bdev))
		ret = -ENODEV;
	else if (!flt)
		ret = -ENOENT;
	else if (strcmp(flt->ops->name, name))
		ret = -EINVAL;
	else
		blkfilter_unpublish(bdev, flt);
	mutex_unlock(&bdev->bd_filter_lock);

	if (!ret)
		blkfilter_retire(flt);
	return ret;
}
EXPORT_SYMBOL_GPL(blkfilter_detach);

/*
 * blkfilter_detach_dead - detach whatever filter @bdev has, because the
 * device is going away (disk deletion, partition removal, media change)
 */
void blkfilter_detach_dead(struct block_device *bdev)
{
	struct blkfilter *flt;

	mutex_lock(&bdev->bd_filter_lock);
	flt = blkfilter_get_locked(bdev);
	if (flt)
		blkfilter_unpublish(bdev, flt);
	mutex_unlock(&bdev->bd_filter_lock);

	if (flt)
		blkfilter_retire(flt);
}

/**
 * blkfilter_lock - hold the filter of a given type attached to a device
 * @bdev: the block device
 * @ops: the filter type
 *
 * Takes the lock that serializes attach, detach and commands of @bdev and
 * returns the filter attached to @bdev if @ops made it. The filter stays
 * attached until blkfilter_unlock(): detaching it, by BLKFILTER_DETACH or
 * because the device goes away, waits for the lock. Bios keep flowing
 * through @ops->submit_bio meanwhile.
 *
 * The caller may sleep while holding the lock, but must not attach, detach or
 * send a command to a filter of @bdev, open or close a block device of the
 * disk, or wait for something that does, as those take the lock or rank
 * above it. Not from @ops->submit_bio: a command of @bdev holds the lock and
 * may wait for the submit_bio calls (blkfilter_fence()).
 *
 * Return: the filter, with the lock held; or NULL, with the lock not held,
 * when no filter is attached to @bdev or one of another type is.
 */
struct blkfilter *blkfilter_lock(struct block_device *bdev,
				 const struct blkfilter_operations *ops)
	__cond_acquires(nonnull, &bdev->bd_filter_lock)
{
	struct blkfilter *flt;

	mutex_lock(&bdev->bd_filter_lock);
	flt = blkfilter_get_locked(bdev);
	if (flt && flt->ops == ops)
		return flt;
	mutex_unlock(&bdev->bd_filter_lock);
	return NULL;
}
EXPORT_SYMBOL_GPL(blkfilter_lock);

/**
 * blkfilter_unlock - release a filter held with blkfilter_lock()
 * @bdev: the block device passed to blkfilter_lock()
 *
 * Only after blkfilter_lock() has returned a filter. The filter may be
 * detached from now on.
 */
void blkfilter_unlock(struct block_device *bdev)
	__releases(&bdev->bd_filter_lock)
{
	mutex_unlock(&bdev->bd_filter_lock);
}
EXPORT_SYMBOL_GPL(blkfilter_unlock);

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
 * Return: -ENODEV when the device is going away, -ENOENT when no filter of
 * that type is attached, -ENOTTY when the type takes no commands, otherwise
 * what @ops->ctl returns.
 */
int blkfilter_ctl(struct block_device *bdev, const char *name,
		  unsigned int cmd, __u8 __user *buf, __u32 *plen)
{
	struct blkfilter *flt;
	int ret;

	mutex_lock(&bdev->bd_filter_lock);
	flt = blkfilter_get_locked(bdev);
	if (!blkfilter_bdev_alive(bdev))
		ret = -ENODEV;
	else if (!flt || strcmp(flt->ops->name, name))
		ret = -ENOENT;
	else if (!flt->ops->ctl)
		ret = -ENOTTY;
	else
		ret = flt->ops->ctl(flt, cmd, buf, plen);
	mutex_unlock(&bdev->bd_filter_lock);
	return ret;
}

/* The sysfs "filter" attribute: the name of the attached filter's type. */
ssize_t blkfilter_show(struct block_device *bdev, char *buf)
{
	struct srcu_ctr __percpu *scp;
	struct blkfilter *flt;
	ssize_t ret;

	/* The grace period before ops->detach keeps flt and ops alive here. */
	scp = srcu_read_lock_fast(&blkfilter_srcu);
	flt = srcu_dereference(bdev->bd_filter, &blkfilter_srcu);
	ret = sysfs_emit(buf, "%s\n", flt ? flt->ops->name : "");
	srcu_read_unlock_fast(&blkfilter_srcu, scp);
	return ret;
}

/*
 * Offer @bio to the filter of @bdev, if it still has one; @mark: set
 * BIO_FILTERED first (@bdev is bio->bi_bdev).
 */
static bool blkfilter_offer(struct block_device *bdev, struct bio *bio,
			    bool mark)
{
	struct srcu_ctr __percpu *scp;
	struct blkfilter *flt;
	bool taken = false;

	scp = srcu_read_lock_fast(&blkfilter_srcu);
	flt = srcu_dereference(bdev->bd_filter, &blkfilter_srcu);
	if (flt) {
		if (mark)
			bio_set_flag(bio, BIO_FILTERED);
		taken = flt->ops->submit_bio(flt, bio);
	}
	srcu_read_unlock_fast(&blkfilter_srcu, scp);
	return taken;
}

/*
 * The bio hook of bio->bi_bdev, reached from submit_bio_noacct() only when
 * the device had a filter a moment ago (blkfilter_bio() in blk.h).
 *
 * BIO_FILTERED is the recursion guard: it is set on a bio before the filter
 * of its device sees it, and by blkfilter_submit_bio_direct(), so a bio
 * passes through the filter of a given device at most once, whether the
 * filter lets it go on, resubmits it itself, or issues it as a new bio of its
 * own. Bios cloned or split from it on the same device inherit the flag
 * (__bio_clone()). bio_set_dev() clears the flag when a bio moves to another
 * device, whose filter then sees it. A bio that has been remapped to the
 * whole disk already (BIO_REMAPPED) is not offered again: its sectors no
 * longer are those of the partition.
 */
bool __blkfilter_bio(struct bio *bio)
{
	KUNIT_STATIC_STUB_REDIRECT(__blkfilter_bio, bio);

	if (bio_flagged(bio, BIO_FILTERED) || bio_flagged(bio, BIO_REMAPPED))
		return false;
	return blkfilter_offer(bio->bi_bdev, bio, true);
}

/*
 * The hook of the whole disk, for a bio submitted to one of its partitions:
 * reached from submit_bio_noacct() right after blk_partition_remap(), so the
 * bio has BIO_REMAPPED set and whole-disk sectors, and only when the whole
 * disk had a filter a moment ago (blkfilter_bio_whole() in blk.h). The bio
 * is not offered again when resubmitted, as it stays remapped; BIO_FILTERED,
 * which is about the partition's filter, is left alone.
 */
bool __blkfilter_bio_whole(struct bio *bio)
{
	KUNIT_STATIC_STUB_REDIRECT(__blkfilter_bio_whole, bio);

	return blkfilter_offer(bdev_whole(bio->bi_bdev), bio, false);
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

/*
 * The ioctls. Each returns -EPERM without CAP_SYS_ADMIN, then -EFAULT when
 * the argument cannot be read, then the errors of the call it makes.
 */
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
