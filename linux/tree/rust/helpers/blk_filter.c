// SPDX-License-Identifier: GPL-2.0

#include <linux/bio.h>
#include <linux/blk-filter.h>
#include <linux/blkdev.h>

__rust_helper enum req_op rust_helper_bio_op(const struct bio *bio)
{
	return bio_op(bio);
}

__rust_helper sector_t rust_helper_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

__rust_helper void
rust_helper_blkfilter_init(struct blkfilter *flt,
			   const struct blkfilter_operations *ops)
{
	blkfilter_init(flt, ops);
}
