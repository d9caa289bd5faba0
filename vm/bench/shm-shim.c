// SPDX-License-Identifier: GPL-2.0
/*
 * SysV shared memory for fio on a kernel without CONFIG_SYSVIPC: fio keeps
 * its job table in a shm segment even with --thread, where nothing is shared
 * between processes. Preloaded into fio, these calls hand out anonymous
 * private mappings instead. Only for a single process running --thread.
 */
#include <errno.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/shm.h>

#define NSEG 64

static struct {
	void *addr;
	size_t size;
} seg[NSEG];

int shmget(key_t key, size_t size, int flags)
{
	int i;

	(void)key;
	(void)flags;
	for (i = 0; i < NSEG; i++) {
		if (seg[i].addr)
			continue;
		seg[i].addr = mmap(NULL, size, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (seg[i].addr == MAP_FAILED) {
			seg[i].addr = NULL;
			errno = ENOMEM;
			return -1;
		}
		seg[i].size = size;
		return i;
	}
	errno = ENOSPC;
	return -1;
}

void *shmat(int id, const void *addr, int flags)
{
	(void)addr;
	(void)flags;
	if (id < 0 || id >= NSEG || !seg[id].addr) {
		errno = EINVAL;
		return (void *)-1;
	}
	return seg[id].addr;
}

/* The mapping goes at detach: IPC_RMID comes while it is still in use. */
int shmdt(const void *addr)
{
	int i;

	for (i = 0; i < NSEG; i++) {
		if (seg[i].addr == addr) {
			munmap(seg[i].addr, seg[i].size);
			seg[i].addr = NULL;
			return 0;
		}
	}
	errno = EINVAL;
	return -1;
}

int shmctl(int id, int cmd, struct shmid_ds *buf)
{
	(void)cmd;
	(void)buf;
	if (id < 0 || id >= NSEG || !seg[id].addr) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}
