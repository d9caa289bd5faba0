// SPDX-License-Identifier: GPL-2.0

#include <linux/cred.h>
#include <linux/fs.h>

__rust_helper loff_t rust_helper_i_size_read(const struct inode *inode)
{
	return i_size_read(inode);
}

__rust_helper struct mnt_idmap *rust_helper_file_mnt_idmap(const struct file *file)
{
	return file_mnt_idmap(file);
}

__rust_helper const struct cred *rust_helper_current_cred(void)
{
	return current_cred();
}
