// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit tests of the block device filter core, on a small bio-based disk
 * that each test case creates for itself.
 */
#include <kunit/static_stub.h>
#include <kunit/test.h>
#include <linux/bio.h>
#include <linux/blk-filter.h>
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/workqueue.h>
#include "blk.h"

#define BFT_NAME_A	"blkfilter-test-a"
#define BFT_NAME_B	"blkfilter-test-b"
#define BFT_CMD_OK	7
#define BFT_CTL_LEN	24
#define BFT_SECTORS	2048
#define BFT_PART_START	256
#define BFT_PART_SECTORS	1024
/* The sector at which the disk or the filter holds a bio, when asked to. */
#define BFT_HOLD_SECTOR	512
/* How long a wait that is expected to end may take, and one that must not. */
#define BFT_LONG_MS	10000
#define BFT_SHORT_MS	200
/* A user pointer that copy_from_user() refuses. */
#define BFT_BAD_UPTR	((void __user *)-PAGE_SIZE)

/* What the test filters and the test disk have seen. */
static struct {
	atomic_t attaches;
	atomic_t detaches;
	atomic_t writes;
	atomic_t reads;
	atomic_t disk_bios;
	/* per filter type (a, b): bios seen, last sector and device */
	atomic_t seen[2];
	sector_t sector[2];
	struct block_device *bi_bdev[2];
	/* calls of the hooks' slow paths, while stubbed */
	atomic_t hook_calls;
	atomic_t whole_hook_calls;
	/* the filter takes bios over and resubmits them past itself */
	bool take;
	/* the filter takes the first bio over, splits it, resubmits both */
	bool split;
	int splits;
	/* ops->attach checks that it may enter the queue and read */
	bool attach_io;
	int attach_enter;
	int attach_read;
	/* the last filter ops->attach made */
	struct blkfilter *made;
	/* the disk holds the next bio at BFT_HOLD_SECTOR */
	bool disk_hold;
	/*
	 * the disk keeps the next bio at BFT_HOLD_SECTOR in flight, accounted,
	 * after its submit_bio has returned, until bft_disk_end_kept()
	 */
	bool disk_keep;
	struct bio *kept;
	unsigned long kept_start;
	struct completion disk_held;
	struct completion disk_release;
	/* the filter holds the next bio at BFT_HOLD_SECTOR */
	bool flt_hold;
	struct completion flt_held;
	struct completion flt_release;
	sector_t last_sector;
	sector_t disk_sector;
	unsigned int last_cmd;
} bft;

struct bft_filter {
	struct blkfilter flt;
	struct block_device *bdev;
};

static struct blkfilter_operations bft_ops_a, bft_ops_b;

static int bft_rw(struct block_device *bdev, enum req_op op, sector_t sector,
		  bool direct);

/* The core sets flt->ops itself: this leaves it zeroed. */
static struct blkfilter *bft_attach(struct block_device *bdev)
{
	struct bft_filter *f;

	if (bft.attach_io) {
		struct request_queue *q = bdev_get_queue(bdev);

		/* Would fail with -EAGAIN if the queue were frozen. */
		bft.attach_enter = blk_queue_enter(q, BLK_MQ_REQ_NOWAIT);
		if (!bft.attach_enter) {
			blk_queue_exit(q);
			bft.attach_read = bft_rw(bdev, REQ_OP_READ, 0, false);
		}
	}

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return ERR_PTR(-ENOMEM);
	f->bdev = bdev;
	bft.made = &f->flt;
	atomic_inc(&bft.attaches);
	return &f->flt;
}

static void bft_detach(struct blkfilter *flt)
{
	atomic_inc(&bft.detaches);
	kfree(container_of(flt, struct bft_filter, flt));
}

static int bft_ctl(struct blkfilter *flt, unsigned int cmd, __u8 __user *buf,
		   __u32 *plen)
{
	bft.last_cmd = cmd;
	if (cmd != BFT_CMD_OK)
		return -EINVAL;
	*plen = BFT_CTL_LEN;
	return 0;
}

/* Take @bio over, split it in two and resubmit both parts normally. */
static bool bft_split_bio(struct bio *bio)
{
	struct bio *split;

	split = bio_split(bio, bio_sectors(bio) / 2, GFP_NOIO, &fs_bio_set);
	if (IS_ERR(split)) {
		bio->bi_status = errno_to_blk_status(PTR_ERR(split));
		bio_endio(bio);
		return true;
	}
	bio_chain(split, bio);
	submit_bio_noacct(split);
	submit_bio_noacct(bio);
	return true;
}

static bool bft_submit_bio(struct blkfilter *flt, struct bio *bio)
{
	int i = flt->ops == &bft_ops_a ? 0 : 1;

	if (op_is_write(bio_op(bio)))
		atomic_inc(&bft.writes);
	else
		atomic_inc(&bft.reads);
	atomic_inc(&bft.seen[i]);
	bft.sector[i] = bio->bi_iter.bi_sector;
	bft.bi_bdev[i] = bio->bi_bdev;
	bft.last_sector = bio->bi_iter.bi_sector;

	if (READ_ONCE(bft.flt_hold) &&
	    bio->bi_iter.bi_sector == BFT_HOLD_SECTOR) {
		WRITE_ONCE(bft.flt_hold, false);
		complete(&bft.flt_held);
		wait_for_completion(&bft.flt_release);
	}
	if (bft.split && !bft.splits++)
		return bft_split_bio(bio);
	if (!bft.take)
		return false;
	blkfilter_submit_bio_direct(bio);
	return true;
}

static struct blkfilter_operations bft_ops_a = {
	.owner = THIS_MODULE,
	.name = BFT_NAME_A,
	.attach = bft_attach,
	.detach = bft_detach,
	.ctl = bft_ctl,
	.submit_bio = bft_submit_bio,
};

static struct blkfilter_operations bft_ops_b = {
	.owner = THIS_MODULE,
	.name = BFT_NAME_B,
	.attach = bft_attach,
	.detach = bft_detach,
	.submit_bio = bft_submit_bio,
};

/* The test disk: completes every bio at once, reads return zeroes. */
static void bft_disk_submit_bio(struct bio *bio)
{
	atomic_inc(&bft.disk_bios);
	bft.disk_sector = bio->bi_iter.bi_sector;
	if (READ_ONCE(bft.disk_keep) &&
	    bio->bi_iter.bi_sector == BFT_HOLD_SECTOR) {
		WRITE_ONCE(bft.disk_keep, false);
		bft.kept_start = bio_start_io_acct(bio);
		bft.kept = bio;
		complete(&bft.disk_held);
		return;
	}
	if (READ_ONCE(bft.disk_hold) &&
	    bio->bi_iter.bi_sector == BFT_HOLD_SECTOR) {
		WRITE_ONCE(bft.disk_hold, false);
		complete(&bft.disk_held);
		wait_for_completion(&bft.disk_release);
	}
	if (bio_op(bio) == REQ_OP_READ)
		zero_fill_bio(bio);
	bio_endio(bio);
}

/* Ends the bio that the disk kept in flight. */
static void bft_disk_end_kept(void)
{
	struct bio *bio = bft.kept;

	bft.kept = NULL;
	bio_end_io_acct(bio, bft.kept_start);
	bio_endio(bio);
}

static const struct block_device_operations bft_disk_fops = {
	.owner = THIS_MODULE,
	.submit_bio = bft_disk_submit_bio,
};

struct bft_ctx {
	struct gendisk *disk;
	bool deleted;
	char *buf;
};

static int bft_case_init(struct kunit *test)
{
	static unsigned int seq;
	/* I/O accounting: blkfilter_drain() waits for writes it counts. */
	struct queue_limits lim = { .features = BLK_FEAT_IO_STAT };
	struct bft_ctx *ctx;
	struct gendisk *disk;
	int ret;

	ctx = kunit_kzalloc(test, sizeof(*ctx), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, ctx);
	/* sysfs_emit() wants a page-aligned buffer */
	ctx->buf = kunit_kzalloc(test, PAGE_SIZE, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, ctx->buf);

	memset(&bft, 0, sizeof(bft));
	init_completion(&bft.disk_held);
	init_completion(&bft.disk_release);
	init_completion(&bft.flt_held);
	init_completion(&bft.flt_release);

	disk = blk_alloc_disk(&lim, NUMA_NO_NODE);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, disk);
	disk->fops = &bft_disk_fops;
	/* Partitions are added by hand; there is no table to scan. */
	set_bit(GD_SUPPRESS_PART_SCAN, &disk->state);
	snprintf(disk->disk_name, DISK_NAME_LEN, "blkfilter-test%u", seq++);
	set_capacity(disk, BFT_SECTORS);
	ret = add_disk(disk);
	if (ret) {
		put_disk(disk);
		KUNIT_ASSERT_EQ(test, ret, 0);
	}
	ctx->disk = disk;
	test->priv = ctx;
	return 0;
}

static void bft_case_exit(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;

	if (!ctx || !ctx->disk)
		return;
	if (!ctx->deleted)
		del_gendisk(ctx->disk);
	put_disk(ctx->disk);
}

static struct block_device *bft_bdev(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;

	return ctx->disk->part0;
}

static void bft_delete_disk(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;

	del_gendisk(ctx->disk);
	ctx->deleted = true;
}

/* Partition 1 of the test disk, BFT_PART_START sectors into it. */
static struct block_device *bft_add_part(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;
	struct block_device *part;

	KUNIT_ASSERT_EQ(test, bdev_add_partition(ctx->disk, 1, BFT_PART_START,
						 BFT_PART_SECTORS), 0);
	part = xa_load(&ctx->disk->part_tbl, 1);
	KUNIT_ASSERT_NOT_NULL(test, part);
	return part;
}

static void bft_end_io(struct bio *bio)
{
	complete(bio->bi_private);
}

/*
 * One page of I/O at @sector, submitted normally or past the filter, and
 * waited for. No KUnit assertions: also used from ops->attach and workers.
 */
static int bft_rw(struct block_device *bdev, enum req_op op, sector_t sector,
		  bool direct)
{
	DECLARE_COMPLETION_ONSTACK(done);
	struct page *page;
	struct bio *bio;
	int ret;

	page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!page)
		return -ENOMEM;
	bio = bio_alloc(bdev, 1, op, GFP_KERNEL);
	bio->bi_iter.bi_sector = sector;
	__bio_add_page(bio, page, PAGE_SIZE, 0);
	bio->bi_private = &done;
	bio->bi_end_io = bft_end_io;
	if (direct)
		blkfilter_submit_bio_direct(bio);
	else
		submit_bio(bio);
	wait_for_completion(&done);
	ret = blk_status_to_errno(bio->bi_status);
	bio_put(bio);
	__free_page(page);
	return ret;
}

static int bft_io_bdev(struct kunit *test, struct block_device *bdev,
		       enum req_op op, sector_t sector, bool direct)
{
	return bft_rw(bdev, op, sector, direct);
}

static int bft_io(struct kunit *test, enum req_op op, sector_t sector,
		  bool direct)
{
	return bft_rw(bft_bdev(test), op, sector, direct);
}

static const char *bft_show(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;

	blkfilter_show(bft_bdev(test), ctx->buf);
	return ctx->buf;
}

/* A call run by a worker, for what must happen while the test waits. */
enum bft_job { BFT_WRITE, BFT_ATTACH, BFT_DETACH, BFT_FENCE, BFT_DRAIN };

struct bft_work {
	struct work_struct work;
	enum bft_job job;
	struct block_device *bdev;
	const char *name;
	sector_t sector;
	int ret;
	struct completion done;
};

static void bft_work_fn(struct work_struct *work)
{
	struct bft_work *w = container_of(work, struct bft_work, work);

	switch (w->job) {
	case BFT_WRITE:
		w->ret = bft_rw(w->bdev, REQ_OP_WRITE, w->sector, false);
		break;
	case BFT_ATTACH:
		w->ret = blkfilter_attach(w->bdev, w->name);
		break;
	case BFT_DETACH:
		w->ret = blkfilter_detach(w->bdev, w->name);
		break;
	case BFT_FENCE:
		blkfilter_fence();
		w->ret = 0;
		break;
	case BFT_DRAIN:
		w->ret = blkfilter_drain(&w->bdev, 1, BFT_LONG_MS);
		break;
	}
	complete(&w->done);
}

static struct bft_work *bft_work_new(struct kunit *test)
{
	struct bft_work *w = kunit_kzalloc(test, sizeof(*w), GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, w);
	return w;
}

static void bft_start(struct bft_work *w, enum bft_job job,
		      struct block_device *bdev, const char *name,
		      sector_t sector)
{
	w->job = job;
	w->bdev = bdev;
	w->name = name;
	w->sector = sector;
	init_completion(&w->done);
	INIT_WORK(&w->work, bft_work_fn);
	queue_work(system_dfl_wq, &w->work);
}

/* Whether @w has finished within @ms milliseconds. */
static bool bft_done_within(struct bft_work *w, unsigned int ms)
{
	return wait_for_completion_timeout(&w->done, msecs_to_jiffies(ms));
}

/* Whether @c has been completed within BFT_LONG_MS. */
static bool bft_completed(struct completion *c)
{
	return wait_for_completion_timeout(c, msecs_to_jiffies(BFT_LONG_MS));
}

/* Whether @cond() has become true within BFT_LONG_MS. */
static bool bft_poll(struct kunit *test, bool (*cond)(struct kunit *test))
{
	unsigned int ms;

	for (ms = 0; ms < BFT_LONG_MS; ms += 20) {
		if (cond(test))
			return true;
		msleep(20);
	}
	return cond(test);
}

static bool bft_shows_a(struct kunit *test)
{
	return !strcmp(bft_show(test), BFT_NAME_A "\n");
}

static bool bft_saw_write(struct kunit *test)
{
	return atomic_read(&bft.writes) > 0;
}

static void blkfilter_test_register(struct kunit *test)
{
	struct blkfilter_operations dup = bft_ops_b;
	struct blkfilter_operations bad = bft_ops_b;

	/* bft_ops_a and _b are registered by the suite */
	KUNIT_EXPECT_EQ(test, blkfilter_register(&dup), -EBUSY);
	bad.name = "";
	KUNIT_EXPECT_EQ(test, blkfilter_register(&bad), -EINVAL);
	bad.name = "a-name-that-is-longer-than-32-bytes";
	KUNIT_EXPECT_EQ(test, blkfilter_register(&bad), -EINVAL);
	bad.name = "blkfilter-test-c";
	bad.submit_bio = NULL;
	KUNIT_EXPECT_EQ(test, blkfilter_register(&bad), -EINVAL);
}

static void blkfilter_test_attach_detach(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);

	KUNIT_EXPECT_STREQ(test, bft_show(test), "\n");
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), -ENOENT);
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, "no-such-filter"),
			-ENOENT);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.attaches), 1);
	KUNIT_EXPECT_TRUE(test, static_key_enabled(&blkfilter_in_use));
	KUNIT_EXPECT_STREQ(test, bft_show(test), BFT_NAME_A "\n");

	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), -EALREADY);
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, BFT_NAME_B), -EBUSY);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.attaches), 1);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_B), -EINVAL);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 0);

	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
	KUNIT_EXPECT_STREQ(test, bft_show(test), "\n");
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), -ENOENT);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);

	/* Another type may be attached now. */
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, BFT_NAME_B), 0);
	KUNIT_EXPECT_STREQ(test, bft_show(test), BFT_NAME_B "\n");
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_B), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 2);
}

/* ops->attach leaves flt->ops alone; the core sets it. */
static void blkfilter_test_core_sets_ops(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);
	struct blkfilter *flt;

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_B), 0);
	KUNIT_ASSERT_NOT_NULL(test, bft.made);
	KUNIT_EXPECT_PTR_EQ(test, bft.made->ops,
			    (const struct blkfilter_operations *)&bft_ops_b);

	flt = blkfilter_lock(bdev, &bft_ops_b);
	KUNIT_EXPECT_PTR_EQ(test, flt, bft.made);
	if (flt)
		blkfilter_unlock(bdev);

	/* The hook calls the ops the core set. */
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 8, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[1]), 1);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_B), 0);
}

static void blkfilter_test_lock(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);
	struct bft_work *det = bft_work_new(test);
	struct blkfilter *flt;

	/* Nothing attached: NULL, and the lock is not held. */
	KUNIT_EXPECT_NULL(test, blkfilter_lock(bdev, &bft_ops_a));
	KUNIT_EXPECT_FALSE(test, mutex_is_locked(&bdev->bd_filter_lock));

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);

	/* A filter of another type: NULL, and the lock is not held. */
	KUNIT_EXPECT_NULL(test, blkfilter_lock(bdev, &bft_ops_b));
	KUNIT_EXPECT_FALSE(test, mutex_is_locked(&bdev->bd_filter_lock));

	flt = blkfilter_lock(bdev, &bft_ops_a);
	KUNIT_EXPECT_PTR_EQ(test, flt, bft.made);
	if (!flt) {
		KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
		return;
	}
	KUNIT_EXPECT_TRUE(test, mutex_is_locked(&bdev->bd_filter_lock));

	/* Held: a detach waits, and the filter stays attached. */
	bft_start(det, BFT_DETACH, bdev, BFT_NAME_A, 0);
	KUNIT_EXPECT_FALSE(test, bft_done_within(det, BFT_SHORT_MS));
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 0);
	KUNIT_EXPECT_STREQ(test, bft_show(test), BFT_NAME_A "\n");
	/* Bios still pass through the filter meanwhile. */
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 8, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);

	blkfilter_unlock(bdev);
	wait_for_completion(&det->done);
	KUNIT_EXPECT_EQ(test, det->ret, 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
	KUNIT_EXPECT_NULL(test, blkfilter_lock(bdev, &bft_ops_a));
}

static void blkfilter_test_ctl(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);
	__u32 len = 0;

	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_A, BFT_CMD_OK, NULL,
					    &len), -ENOENT);
	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);

	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_A, BFT_CMD_OK, NULL,
					    &len), 0);
	KUNIT_EXPECT_EQ(test, len, BFT_CTL_LEN);
	KUNIT_EXPECT_EQ(test, bft.last_cmd, BFT_CMD_OK);
	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_A, 1, NULL, &len),
			-EINVAL);
	KUNIT_EXPECT_EQ(test, bft.last_cmd, 1);
	/* A command for another filter does not reach this one. */
	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_B, BFT_CMD_OK, NULL,
					    &len), -ENOENT);
	KUNIT_EXPECT_EQ(test, bft.last_cmd, 1);

	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
}

/* The errnos of BLKFILTER_ATTACH, in the order of the v6 interface. */
static void blkfilter_test_attach_errnos(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);

	KUNIT_EXPECT_EQ(test, blkfilter_ioctl_attach(bdev, BFT_BAD_UPTR),
			-EFAULT);
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, "no-such-filter"),
			-ENOENT);
	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), -EALREADY);
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, BFT_NAME_B), -EBUSY);
	KUNIT_EXPECT_EQ(test, blkfilter_ioctl_attach(bdev, BFT_BAD_UPTR),
			-EFAULT);

	bft_delete_disk(test);
	KUNIT_EXPECT_EQ(test, blkfilter_ioctl_attach(bdev, BFT_BAD_UPTR),
			-EFAULT);
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, "no-such-filter"),
			-ENOENT);
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), -ENODEV);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.attaches), 1);
}

/* The errnos of BLKFILTER_DETACH, in the order of the v6 interface. */
static void blkfilter_test_detach_errnos(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);

	KUNIT_EXPECT_EQ(test, blkfilter_ioctl_detach(bdev, BFT_BAD_UPTR),
			-EFAULT);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), -ENOENT);
	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	/* Another name than the attached filter's: EINVAL, still attached. */
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_B), -EINVAL);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, "no-such-filter"),
			-EINVAL);
	KUNIT_EXPECT_STREQ(test, bft_show(test), BFT_NAME_A "\n");
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 0);
	KUNIT_EXPECT_EQ(test, blkfilter_ioctl_detach(bdev, BFT_BAD_UPTR),
			-EFAULT);

	/* The removal detaches the filter; the device is dead after it. */
	bft_delete_disk(test);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
	KUNIT_EXPECT_EQ(test, blkfilter_ioctl_detach(bdev, BFT_BAD_UPTR),
			-EFAULT);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), -ENODEV);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_B), -ENODEV);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
}

/* The errnos of BLKFILTER_CTL, in the order of the v6 interface. */
static void blkfilter_test_ctl_errnos(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);
	__u32 len = 0;

	KUNIT_EXPECT_EQ(test, blkfilter_ioctl_ctl(bdev, BFT_BAD_UPTR),
			-EFAULT);
	/* No filter, or another one than named: ENOENT. */
	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_B, BFT_CMD_OK, NULL,
					    &len), -ENOENT);
	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_B, BFT_CMD_OK, NULL,
					    &len), -ENOENT);
	/* The filter's own result. */
	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_A, 1, NULL, &len),
			-EINVAL);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);

	/* Type b has no ctl operation: ENOTTY. */
	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_B), 0);
	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_B, BFT_CMD_OK, NULL,
					    &len), -ENOTTY);
	KUNIT_EXPECT_EQ(test, blkfilter_ioctl_ctl(bdev, BFT_BAD_UPTR),
			-EFAULT);

	bft_delete_disk(test);
	KUNIT_EXPECT_EQ(test, blkfilter_ioctl_ctl(bdev, BFT_BAD_UPTR),
			-EFAULT);
	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_B, BFT_CMD_OK, NULL,
					    &len), -ENODEV);
	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_A, BFT_CMD_OK, NULL,
					    &len), -ENODEV);
}

static void blkfilter_test_sees_bios(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);

	/* Without a filter, bios go straight to the disk. */
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 0, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 1);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 64, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);
	KUNIT_EXPECT_EQ(test, bft.last_sector, 64);
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_READ, 128, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.reads), 1);
	KUNIT_EXPECT_EQ(test, bft.last_sector, 128);
	/* The filter let both go on to the disk. */
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 3);

	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 0, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 4);
}

static void blkfilter_test_recursion_guard(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);

	/* The filter takes the bio and resubmits it: it sees it once. */
	bft.take = true;
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 8, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 1);

	/* A bio sent past the filter is not seen at all. */
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 16, true), 0);
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_READ, 16, true), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.reads), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 3);

	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
}

/*
 * A filter that takes a bio over, splits it with bio_split() + bio_chain()
 * and resubmits both parts with submit_bio_noacct() sees one bio: the split
 * part inherits BIO_FILTERED from the bio it was split from.
 */
static void blkfilter_test_split(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	bft.split = true;
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 64, false), 0);
	KUNIT_EXPECT_EQ(test, bft.splits, 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[0]), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 2);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
}

static void blkfilter_test_detach_on_removal(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 0, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);

	bft_delete_disk(test);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
	KUNIT_EXPECT_STREQ(test, bft_show(test), "\n");

	/* Nothing is attached to a device that is gone. */
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), -ENODEV);
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), -ENODEV);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.attaches), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
}

static void blkfilter_test_partition(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;
	struct block_device *part = bft_add_part(test);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(part, BFT_NAME_A), 0);

	/* The filter sees sectors of the partition, the disk remapped ones. */
	KUNIT_EXPECT_EQ(test, bft_io_bdev(test, part, REQ_OP_WRITE, 8, false),
			0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);
	KUNIT_EXPECT_EQ(test, bft.last_sector, 8);
	KUNIT_EXPECT_EQ(test, bft.disk_sector, BFT_PART_START + 8);

	/* I/O to the whole disk does not pass the partition's filter. */
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, BFT_PART_START + 8,
				     false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);
	KUNIT_EXPECT_STREQ(test, bft_show(test), "\n");

	/* Deleting the partition detaches its filter. */
	KUNIT_EXPECT_EQ(test, bdev_del_partition(ctx->disk, 1), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
}

/*
 * A filter on the whole disk sees the writes submitted to its partitions,
 * with whole-disk sectors; one on the partition sees partition sectors; with
 * both attached, each sees a bio once, whether it lets it go on or takes it
 * over.
 */
static void blkfilter_test_whole_disk_sees_partitions(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;
	struct block_device *bdev = bft_bdev(test);
	struct block_device *part = bft_add_part(test);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, bft_io_bdev(test, part, REQ_OP_WRITE, 8, false),
			0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[0]), 1);
	KUNIT_EXPECT_EQ(test, bft.sector[0], BFT_PART_START + 8);
	KUNIT_EXPECT_PTR_EQ(test, bft.bi_bdev[0], part);
	KUNIT_EXPECT_EQ(test, bft.disk_sector, BFT_PART_START + 8);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 1);
	/* I/O to the whole disk itself, as before. */
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 8, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[0]), 2);
	KUNIT_EXPECT_EQ(test, bft.sector[0], 8);

	/* Both attached: each sees the bio once, with its own sectors. */
	KUNIT_ASSERT_EQ(test, blkfilter_attach(part, BFT_NAME_B), 0);
	KUNIT_EXPECT_EQ(test, bft_io_bdev(test, part, REQ_OP_WRITE, 16, false),
			0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[1]), 1);
	KUNIT_EXPECT_EQ(test, bft.sector[1], 16);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[0]), 3);
	KUNIT_EXPECT_EQ(test, bft.sector[0], BFT_PART_START + 16);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 3);

	/* Both take it over and resubmit it: still once each. */
	bft.take = true;
	KUNIT_EXPECT_EQ(test, bft_io_bdev(test, part, REQ_OP_WRITE, 24, false),
			0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[1]), 2);
	KUNIT_EXPECT_EQ(test, bft.sector[1], 24);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[0]), 4);
	KUNIT_EXPECT_EQ(test, bft.sector[0], BFT_PART_START + 24);
	KUNIT_EXPECT_EQ(test, bft.disk_sector, BFT_PART_START + 24);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 4);
	bft.take = false;

	/* A bio sent past the partition's filter still reaches the disk's. */
	KUNIT_EXPECT_EQ(test, bft_io_bdev(test, part, REQ_OP_WRITE, 32, true),
			0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[1]), 2);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.seen[0]), 5);

	KUNIT_EXPECT_EQ(test, blkfilter_detach(part, BFT_NAME_B), 0);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, bdev_del_partition(ctx->disk, 1), 0);
}

static bool bft_stub_hook(struct bio *bio)
{
	atomic_inc(&bft.hook_calls);
	return false;
}

static bool bft_stub_whole_hook(struct bio *bio)
{
	atomic_inc(&bft.whole_hook_calls);
	return false;
}

/*
 * While a filter is attached somewhere, the bios of a device without one do
 * not reach the hooks' slow paths (and their SRCU read-side section). The
 * slow paths are stubbed out, so the filters do not see the bios here.
 */
static void blkfilter_test_fast_path(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;
	struct block_device *bdev = bft_bdev(test);
	struct block_device *part = bft_add_part(test);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(part, BFT_NAME_A), 0);
	kunit_activate_static_stub(test, __blkfilter_bio, bft_stub_hook);
	kunit_activate_static_stub(test, __blkfilter_bio_whole,
				   bft_stub_whole_hook);

	/* The whole disk has no filter. */
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 8, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.hook_calls), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.whole_hook_calls), 0);
	/* The partition has one; the whole disk still has none. */
	KUNIT_EXPECT_EQ(test, bft_io_bdev(test, part, REQ_OP_WRITE, 8, false),
			0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.hook_calls), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.whole_hook_calls), 0);

	/* Now only the whole disk has a filter. */
	kunit_deactivate_static_stub(test, __blkfilter_bio);
	kunit_deactivate_static_stub(test, __blkfilter_bio_whole);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(part, BFT_NAME_A), 0);
	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	kunit_activate_static_stub(test, __blkfilter_bio, bft_stub_hook);
	kunit_activate_static_stub(test, __blkfilter_bio_whole,
				   bft_stub_whole_hook);
	KUNIT_EXPECT_EQ(test, bft_io_bdev(test, part, REQ_OP_WRITE, 8, false),
			0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.hook_calls), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.whole_hook_calls), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 0);

	kunit_deactivate_static_stub(test, __blkfilter_bio);
	kunit_deactivate_static_stub(test, __blkfilter_bio_whole);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, bdev_del_partition(ctx->disk, 1), 0);
}

/*
 * ops->attach runs before anything is frozen: it can enter the queue and
 * read from its device. Its own read is not filtered.
 */
static void blkfilter_test_attach_may_do_io(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);

	bft.attach_io = true;
	bft.attach_enter = -EINVAL;
	bft.attach_read = -EINVAL;
	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, bft.attach_enter, 0);
	KUNIT_EXPECT_EQ(test, bft.attach_read, 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.reads), 0);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
}

/*
 * The fence of an attach: a write that has entered the queue before the
 * filter was published is waited for, and the filter is published while the
 * attach waits, so a write submitted then is seen by it.
 */
static void blkfilter_test_attach_fence(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);
	struct bft_work *early = bft_work_new(test);
	struct bft_work *att = bft_work_new(test);
	struct bft_work *late = bft_work_new(test);

	/* A write the disk holds: it is in the queue, past the hook. */
	WRITE_ONCE(bft.disk_hold, true);
	bft_start(early, BFT_WRITE, bdev, NULL, BFT_HOLD_SECTOR);
	KUNIT_EXPECT_TRUE(test, bft_completed(&bft.disk_held));

	bft_start(att, BFT_ATTACH, bdev, BFT_NAME_A, 0);
	KUNIT_EXPECT_TRUE(test, bft_poll(test, bft_shows_a));
	KUNIT_EXPECT_FALSE(test, completion_done(&att->done));

	/* Published, not returned yet: a new write is seen by the filter. */
	bft_start(late, BFT_WRITE, bdev, NULL, BFT_HOLD_SECTOR + 64);
	KUNIT_EXPECT_TRUE(test, bft_poll(test, bft_saw_write));
	KUNIT_EXPECT_EQ(test, bft.last_sector, BFT_HOLD_SECTOR + 64);
	/* The attach still waits for the held write to leave the queue. */
	KUNIT_EXPECT_FALSE(test, bft_done_within(att, BFT_SHORT_MS));

	complete(&bft.disk_release);
	wait_for_completion(&early->done);
	wait_for_completion(&att->done);
	wait_for_completion(&late->done);
	KUNIT_EXPECT_EQ(test, early->ret, 0);
	KUNIT_EXPECT_EQ(test, att->ret, 0);
	KUNIT_EXPECT_EQ(test, late->ret, 0);
	/* The held write passed the hook before the filter existed. */
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.disk_bios), 2);
	if (!att->ret)
		KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
}

/* blkfilter_fence() waits for a submit_bio call that is running. */
static void blkfilter_test_fence(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);
	struct bft_work *idle = bft_work_new(test);
	struct bft_work *io = bft_work_new(test);
	struct bft_work *fence = bft_work_new(test);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);

	/* Nothing running: returns. */
	bft_start(idle, BFT_FENCE, bdev, NULL, 0);
	wait_for_completion(&idle->done);

	/* A write the filter holds in its submit_bio. */
	WRITE_ONCE(bft.flt_hold, true);
	bft_start(io, BFT_WRITE, bdev, NULL, BFT_HOLD_SECTOR);
	KUNIT_EXPECT_TRUE(test, bft_completed(&bft.flt_held));
	bft_start(fence, BFT_FENCE, bdev, NULL, 0);
	KUNIT_EXPECT_FALSE(test, bft_done_within(fence, BFT_SHORT_MS));

	complete(&bft.flt_release);
	wait_for_completion(&fence->done);
	wait_for_completion(&io->done);
	KUNIT_EXPECT_EQ(test, io->ret, 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), 0);
}

/*
 * A write that the bio-based test disk keeps in flight after its submit_bio
 * has returned: a drain of @bdev waits for it, and returns 0 once it ends.
 */
static void bft_expect_drain_waits(struct kunit *test,
				   struct block_device *bdev)
{
	struct bft_work *io = bft_work_new(test);
	struct bft_work *drain = bft_work_new(test);

	reinit_completion(&bft.disk_held);
	WRITE_ONCE(bft.disk_keep, true);
	bft_start(io, BFT_WRITE, bdev, NULL, BFT_HOLD_SECTOR);
	KUNIT_ASSERT_TRUE(test, bft_completed(&bft.disk_held));
	bft_start(drain, BFT_DRAIN, bdev, NULL, 0);
	KUNIT_EXPECT_FALSE(test, bft_done_within(drain, BFT_SHORT_MS));
	bft_disk_end_kept();
	KUNIT_EXPECT_TRUE(test, bft_done_within(drain, BFT_LONG_MS));
	KUNIT_EXPECT_EQ(test, drain->ret, 0);
	wait_for_completion(&io->done);
	KUNIT_EXPECT_EQ(test, io->ret, 0);
}

/*
 * blkfilter_drain() on the bio-based test disk: it returns at once when no
 * write is in flight, waits for a write that the disk keeps in flight after
 * its submit_bio has returned, and gives up with -ETIMEDOUT after its
 * timeout.
 */
static void blkfilter_test_drain(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);
	struct bft_work *late = bft_work_new(test);

	KUNIT_EXPECT_EQ(test, blkfilter_drain(&bdev, 1, BFT_LONG_MS), 0);

	bft_expect_drain_waits(test, bdev);

	reinit_completion(&bft.disk_held);
	WRITE_ONCE(bft.disk_keep, true);
	bft_start(late, BFT_WRITE, bdev, NULL, BFT_HOLD_SECTOR);
	KUNIT_ASSERT_TRUE(test, bft_completed(&bft.disk_held));
	KUNIT_EXPECT_EQ(test, blkfilter_drain(&bdev, 1, BFT_SHORT_MS),
			-ETIMEDOUT);
	bft_disk_end_kept();
	wait_for_completion(&late->done);
	KUNIT_EXPECT_EQ(test, late->ret, 0);
}

/* Whether the queue of @bdev counts its users in per-cpu mode. */
static bool bft_counter_percpu(struct block_device *bdev)
{
	unsigned long __percpu *count;
	bool ret;

	rcu_read_lock();
	ret = __ref_is_percpu(&bdev_get_queue(bdev)->q_usage_counter, &count);
	rcu_read_unlock();
	return ret;
}

/*
 * blkfilter_drain_prepare() switches the queue's usage counter to atomic mode
 * ahead of the drain, and blkfilter_drain_cancel() or the drain switches it
 * back. A drain after it still waits for a write in flight.
 */
static void blkfilter_test_drain_prepared(struct kunit *test)
{
	struct block_device *bdev = bft_bdev(test);

	KUNIT_ASSERT_TRUE(test, bft_counter_percpu(bdev));
	blkfilter_drain_prepare(&bdev, 1);
	KUNIT_EXPECT_FALSE(test, bft_counter_percpu(bdev));
	blkfilter_drain_cancel(&bdev, 1);
	KUNIT_EXPECT_TRUE(test, bft_counter_percpu(bdev));

	blkfilter_drain_prepare(&bdev, 1);
	bft_expect_drain_waits(test, bdev);
	KUNIT_EXPECT_TRUE(test, bft_counter_percpu(bdev));
}

static int bft_suite_init(struct kunit_suite *suite)
{
	int ret;

	ret = blkfilter_register(&bft_ops_a);
	if (ret)
		return ret;
	ret = blkfilter_register(&bft_ops_b);
	if (ret)
		blkfilter_unregister(&bft_ops_a);
	return ret;
}

static void bft_suite_exit(struct kunit_suite *suite)
{
	blkfilter_unregister(&bft_ops_b);
	blkfilter_unregister(&bft_ops_a);
}

static struct kunit_case blkfilter_test_cases[] = {
	KUNIT_CASE(blkfilter_test_register),
	KUNIT_CASE(blkfilter_test_attach_detach),
	KUNIT_CASE(blkfilter_test_core_sets_ops),
	KUNIT_CASE(blkfilter_test_lock),
	KUNIT_CASE(blkfilter_test_ctl),
	KUNIT_CASE(blkfilter_test_attach_errnos),
	KUNIT_CASE(blkfilter_test_detach_errnos),
	KUNIT_CASE(blkfilter_test_ctl_errnos),
	KUNIT_CASE(blkfilter_test_sees_bios),
	KUNIT_CASE(blkfilter_test_recursion_guard),
	KUNIT_CASE(blkfilter_test_split),
	KUNIT_CASE(blkfilter_test_detach_on_removal),
	KUNIT_CASE(blkfilter_test_partition),
	KUNIT_CASE(blkfilter_test_whole_disk_sees_partitions),
	KUNIT_CASE(blkfilter_test_fast_path),
	KUNIT_CASE(blkfilter_test_attach_may_do_io),
	KUNIT_CASE(blkfilter_test_attach_fence),
	KUNIT_CASE(blkfilter_test_fence),
	KUNIT_CASE(blkfilter_test_drain),
	KUNIT_CASE(blkfilter_test_drain_prepared),
	{}
};

static struct kunit_suite blkfilter_test_suite = {
	.name = "blkfilter",
	.suite_init = bft_suite_init,
	.suite_exit = bft_suite_exit,
	.init = bft_case_init,
	.exit = bft_case_exit,
	.test_cases = blkfilter_test_cases,
};

kunit_test_suite(blkfilter_test_suite);

MODULE_DESCRIPTION("KUnit tests for block device filters");
MODULE_LICENSE("GPL");
