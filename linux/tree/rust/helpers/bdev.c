// SPDX-License-Identifier: GPL-2.0

#include <linux/blkdev.h>

__rust_helper sector_t rust_helper_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}
