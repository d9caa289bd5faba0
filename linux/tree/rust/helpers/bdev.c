// SPDX-License-Identifier: GPL-2.0

#include <linux/blk-integrity.h>
#include <linux/blkdev.h>

__rust_helper sector_t rust_helper_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

__rust_helper unsigned int
rust_helper_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}

__rust_helper unsigned int
rust_helper_bdev_dma_alignment(struct block_device *bdev)
{
	return bdev_dma_alignment(bdev);
}

__rust_helper bool rust_helper_bdev_read_only(struct block_device *bdev)
{
	return bdev_read_only(bdev);
}

__rust_helper bool rust_helper_bdev_is_partition(struct block_device *bdev)
{
	return bdev_is_partition(bdev);
}

__rust_helper struct blk_integrity *
rust_helper_bdev_get_integrity(struct block_device *bdev)
{
	return bdev_get_integrity(bdev);
}

__rust_helper sector_t rust_helper_bdev_zone_sectors(struct block_device *bdev)
{
	return bdev_zone_sectors(bdev);
}
