// SPDX-License-Identifier: GPL-2.0

#include <linux/bio.h>

__rust_helper enum req_op rust_helper_bio_op(const struct bio *bio)
{
	return bio_op(bio);
}
