// SPDX-License-Identifier: GPL-2.0

#include <linux/bio.h>
#include <linux/bio-integrity.h>
#include <linux/blk-crypto.h>

__rust_helper bool rust_helper_bio_has_data(struct bio *bio)
{
	return bio_has_data(bio);
}

__rust_helper struct bio_vec rust_helper_bio_iter_bvec(struct bio *bio,
						       struct bvec_iter iter)
{
	return bio_iter_iovec(bio, iter);
}

__rust_helper void rust_helper_bio_advance_iter_single(const struct bio *bio,
						       struct bvec_iter *iter,
						       unsigned int bytes)
{
	bio_advance_iter_single(bio, iter, bytes);
}

__rust_helper void rust_helper_bio_set_dev(struct bio *bio,
					   struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

__rust_helper bool rust_helper_bio_in_atomic(void)
{
	return bio_in_atomic();
}

__rust_helper bool rust_helper_bio_has_crypt_ctx(struct bio *bio)
{
	return bio_has_crypt_ctx(bio);
}

__rust_helper struct bio_integrity_payload *
rust_helper_bio_integrity(struct bio *bio)
{
	return bio_integrity(bio);
}
