// SPDX-License-Identifier: GPL-2.0
/*
 * A take must not wait for a cbtmap read whose copy to user space faults.
 *
 * A BLKFILTER_CTL cbtmap reads the change map into a buffer registered with
 * userfaultfd, so that the copy to user space blocks in the fault until this
 * program resolves it. While it is blocked, a take of a snapshot of the
 * device must complete: a real fault can wait for a file system that the
 * take has frozen (a fresh MAP_SHARED mapping of a file on it), and a take
 * that waited for the read would then never thaw it.
 *
 * usage: cbtmap-fault DEVICE STORAGE_DIR
 * The blksnap filter must be attached to DEVICE. Exits 0 when the take
 * completed while the read was blocked, 1 when it waited, 2 on error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/blk-filter.h>
#include <linux/blksnap.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int dev, ctrl;
static struct blksnap_snapshot_create create;
static void *region;
static unsigned int blocks;
static volatile int read_rc = -1, take_rc = -1, take_done;

static void die(const char *what)
{
	fprintf(stderr, "cbtmap-fault: %s: %s\n", what, strerror(errno));
	exit(2);
}

static int ctl(unsigned int cmd, void *opt, unsigned int len)
{
	struct blkfilter_ctl c = { .cmd = cmd, .optlen = len,
				   .opt = (unsigned long)opt };

	strncpy((char *)c.name, "blksnap", sizeof(c.name));
	return ioctl(dev, BLKFILTER_CTL, &c);
}

static void *reader(void *arg)
{
	struct blksnap_cbtmap map = { .offset = 0, .length = blocks,
				      .buffer = (unsigned long)region };

	(void)arg;
	read_rc = ctl(blkfilter_ctl_blksnap_cbtmap, &map, sizeof(map)) < 0 ?
		errno : 0;
	return NULL;
}

static void *taker(void *arg)
{
	(void)arg;
	take_rc = ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_TAKE, &create.id) < 0 ?
		errno : 0;
	take_done = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { 0 };
	struct blksnap_snapshotadd add;
	struct blksnap_cbtinfo info;
	struct uffdio_zeropage zero;
	struct uffd_msg msg;
	pthread_t rt, tt;
	struct pollfd p;
	long page = sysconf(_SC_PAGESIZE);
	size_t len;
	int uffd, storage, waited = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: cbtmap-fault DEVICE STORAGE_DIR\n");
		return 2;
	}
	dev = open(argv[1], O_RDONLY);
	ctrl = open("/dev/blksnap-control", O_RDWR);
	if (dev < 0 || ctrl < 0)
		die("open");
	if (ctl(blkfilter_ctl_blksnap_cbtinfo, &info, sizeof(info)) < 0)
		die("cbtinfo");
	blocks = info.block_count;
	len = (blocks + page - 1) / page * page;

	storage = open(argv[2], O_TMPFILE | O_RDWR, 0600);
	if (storage < 0)
		die("O_TMPFILE");
	create.diff_storage_limit_sect = 16 << 11;
	create.diff_storage_fd = storage;
	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_CREATE, &create) < 0)
		die("create");
	close(storage);
	memcpy(&add.id, &create.id, sizeof(add.id));
	if (ctl(blkfilter_ctl_blksnap_snapshotadd, &add, sizeof(add)) < 0)
		die("snapshotadd");

	uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0)
		die("userfaultfd");
	region = mmap(NULL, len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap");
	reg.range.start = (unsigned long)region;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER");

	if (pthread_create(&rt, NULL, reader, NULL))
		die("pthread_create");
	p.fd = uffd;
	p.events = POLLIN;
	if (poll(&p, 1, 10000) != 1 || read(uffd, &msg, sizeof(msg)) != sizeof(msg) ||
	    msg.event != UFFD_EVENT_PAGEFAULT) {
		fprintf(stderr, "cbtmap-fault: the cbtmap copy did not fault\n");
		return 2;
	}
	printf("cbtmap copy blocked in a page fault\n");

	if (pthread_create(&tt, NULL, taker, NULL))
		die("pthread_create");
	for (int i = 0; i < 100 && !take_done; i++)
		usleep(50000);
	waited = !take_done;
	printf(waited ? "the take waited for the faulting read\n" :
			"the take completed while the read was blocked\n");

	/* Resolve every fault of the read, then let both finish. */
	for (size_t off = 0; off < len; off += page) {
		zero.range.start = (unsigned long)region + off;
		zero.range.len = page;
		zero.mode = 0;
		if (ioctl(uffd, UFFDIO_ZEROPAGE, &zero) < 0 && errno != EEXIST)
			die("UFFDIO_ZEROPAGE");
	}
	pthread_join(rt, NULL);
	pthread_join(tt, NULL);
	printf("cbtmap: %s, take: %s\n", strerror(read_rc), strerror(take_rc));
	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_DESTROY, &create.id) < 0)
		die("destroy");
	if (take_rc) {
		fprintf(stderr, "cbtmap-fault: the take failed\n");
		return 2;
	}
	if (read_rc && read_rc != EAGAIN) {
		fprintf(stderr, "cbtmap-fault: the read failed\n");
		return 2;
	}
	return waited;
}
