// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit tests of the block device filter core, on a small bio-based disk
 * that each test case creates for itself.
 */
#include <kunit/test.h>
#include <linux/bio.h>
#include <linux/blk-filter.h>
#include <linux/blkdev.h>
#include <linux/completion.h>
#include <linux/slab.h>
#include "blk.h"

#define BFT_NAME_A	"blkfilter-test-a"
#define BFT_NAME_B	"blkfilter-test-b"
#define BFT_CMD_OK	7
#define BFT_CTL_LEN	24
#define BFT_SECTORS	2048
#define BFT_PART_START	256
#define BFT_PART_SECTORS	1024

/* What the test filters and the test disk have seen. */
static struct {
	atomic_t attaches;
	atomic_t detaches;
	atomic_t writes;
	atomic_t reads;
	atomic_t disk_bios;
	/* the filter takes bios over and resubmits them past itself */
	bool take;
	sector_t last_sector;
	sector_t disk_sector;
	unsigned int last_cmd;
} bft;

struct bft_filter {
	struct blkfilter flt;
	struct block_device *bdev;
};

static struct blkfilter_operations bft_ops_a, bft_ops_b;

static struct blkfilter *bft_new(struct block_device *bdev,
				 const struct blkfilter_operations *ops)
{
	struct bft_filter *f = kzalloc(sizeof(*f), GFP_KERNEL);

	if (!f)
		return ERR_PTR(-ENOMEM);
	blkfilter_init(&f->flt, ops);
	f->bdev = bdev;
	atomic_inc(&bft.attaches);
	return &f->flt;
}

static struct blkfilter *bft_attach_a(struct block_device *bdev)
{
	return bft_new(bdev, &bft_ops_a);
}

static struct blkfilter *bft_attach_b(struct block_device *bdev)
{
	return bft_new(bdev, &bft_ops_b);
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

static bool bft_submit_bio(struct blkfilter *flt, struct bio *bio)
{
	if (op_is_write(bio_op(bio)))
		atomic_inc(&bft.writes);
	else
		atomic_inc(&bft.reads);
	bft.last_sector = bio->bi_iter.bi_sector;
	if (!bft.take)
		return false;
	blkfilter_submit_bio_direct(bio);
	return true;
}

static struct blkfilter_operations bft_ops_a = {
	.owner = THIS_MODULE,
	.name = BFT_NAME_A,
	.attach = bft_attach_a,
	.detach = bft_detach,
	.ctl = bft_ctl,
	.submit_bio = bft_submit_bio,
};

static struct blkfilter_operations bft_ops_b = {
	.owner = THIS_MODULE,
	.name = BFT_NAME_B,
	.attach = bft_attach_b,
	.detach = bft_detach,
	.submit_bio = bft_submit_bio,
};

/* The test disk: completes every bio at once, reads return zeroes. */
static void bft_disk_submit_bio(struct bio *bio)
{
	atomic_inc(&bft.disk_bios);
	bft.disk_sector = bio->bi_iter.bi_sector;
	if (bio_op(bio) == REQ_OP_READ)
		zero_fill_bio(bio);
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
	struct queue_limits lim = { };
	struct bft_ctx *ctx;
	struct gendisk *disk;
	int ret;

	ctx = kunit_kzalloc(test, sizeof(*ctx), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, ctx);
	/* sysfs_emit() wants a page-aligned buffer */
	ctx->buf = kunit_kzalloc(test, PAGE_SIZE, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, ctx->buf);

	memset(&bft, 0, sizeof(bft));

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

static void bft_end_io(struct bio *bio)
{
	complete(bio->bi_private);
}

/* One page of I/O at @sector, submitted normally or past the filter. */
static int bft_io_bdev(struct kunit *test, struct block_device *bdev,
		       enum req_op op, sector_t sector, bool direct)
{
	DECLARE_COMPLETION_ONSTACK(done);
	struct page *page;
	struct bio *bio;
	int ret;

	page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	KUNIT_ASSERT_NOT_NULL(test, page);
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

static int bft_io(struct kunit *test, enum req_op op, sector_t sector,
		  bool direct)
{
	return bft_io_bdev(test, bft_bdev(test), op, sector, direct);
}

static const char *bft_show(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;

	blkfilter_show(bft_bdev(test), ctx->buf);
	return ctx->buf;
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
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_B), -ENOENT);
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

	/* Type b has no ctl operation. */
	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_B), 0);
	KUNIT_EXPECT_EQ(test, blkfilter_ctl(bdev, BFT_NAME_B, BFT_CMD_OK, NULL,
					    &len), -EOPNOTSUPP);
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_B), 0);
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

static void blkfilter_test_detach_on_removal(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;
	struct block_device *bdev = bft_bdev(test);

	KUNIT_ASSERT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), 0);
	KUNIT_EXPECT_EQ(test, bft_io(test, REQ_OP_WRITE, 0, false), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.writes), 1);

	del_gendisk(ctx->disk);
	ctx->deleted = true;
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
	KUNIT_EXPECT_STREQ(test, bft_show(test), "\n");

	/* Nothing is attached to a device that is gone. */
	KUNIT_EXPECT_EQ(test, blkfilter_detach(bdev, BFT_NAME_A), -ENOENT);
	KUNIT_EXPECT_EQ(test, blkfilter_attach(bdev, BFT_NAME_A), -ENODEV);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.attaches), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&bft.detaches), 1);
}

static void blkfilter_test_partition(struct kunit *test)
{
	struct bft_ctx *ctx = test->priv;
	struct block_device *part;

	KUNIT_ASSERT_EQ(test, bdev_add_partition(ctx->disk, 1, BFT_PART_START,
						 BFT_PART_SECTORS), 0);
	part = xa_load(&ctx->disk->part_tbl, 1);
	KUNIT_ASSERT_NOT_NULL(test, part);
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
	KUNIT_CASE(blkfilter_test_ctl),
	KUNIT_CASE(blkfilter_test_sees_bios),
	KUNIT_CASE(blkfilter_test_recursion_guard),
	KUNIT_CASE(blkfilter_test_detach_on_removal),
	KUNIT_CASE(blkfilter_test_partition),
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
