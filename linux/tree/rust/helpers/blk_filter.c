// SPDX-License-Identifier: GPL-2.0

#include <linux/blk-filter.h>

__rust_helper void
rust_helper_blkfilter_init(struct blkfilter *flt,
			   const struct blkfilter_operations *ops)
{
	blkfilter_init(flt, ops);
}
