// SPDX-License-Identifier: GPL-2.0
/*
 * A minimal blksnap v6 client, built from the fork's UAPI headers alone, as
 * an existing client would be: attach the filter, create a snapshot with an
 * O_TMPFILE difference storage, add the device, take, read the image while
 * the device is overwritten, destroy. Then a snapshot whose storage
 * overflows: the only event such a client ever gets is "corrupted" (code 0),
 * with the errno as a positive number, as v6 delivers it; an event code
 * the v6 header does not define would end a real client's session.
 *
 * usage: v6client DEVICE STORAGE_DIR
 * Prints each step; exits 0 when the image showed the data of the take and
 * the overflow gave exactly v6's events.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/blk-filter.h>
#include <linux/blksnap.h>

#define LEN (1 << 20)

static void die(const char *what)
{
	fprintf(stderr, "v6client: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void ctl(int fd, unsigned int cmd, void *opt, unsigned int len)
{
	struct blkfilter_ctl c = { .cmd = cmd, .optlen = len,
				   .opt = (unsigned long)opt };

	strncpy((char *)c.name, "blksnap", sizeof(c.name));
	if (ioctl(fd, BLKFILTER_CTL, &c) < 0)
		die("BLKFILTER_CTL");
}

/*
 * A snapshot of DEV whose 1 MiB storage overflows when 8 MiB of it are
 * overwritten; returns 0 when its events are exactly v6's: one corrupted
 * event with err_code ENOSPC, nothing else.
 */
static int overflow(int ctrl, int dev, const char *dir, const char *data)
{
	struct blksnap_snapshot_create create = { 0 };
	struct blksnap_snapshot_event *ev;
	struct blksnap_event_corrupted c;
	struct blksnap_snapshotadd add;
	int storage, corrupted = 0, bad = 0;

	ev = malloc(sizeof(*ev));
	if (!ev)
		die("malloc");
	storage = open(dir, O_TMPFILE | O_RDWR, 0600);
	if (storage < 0)
		die("O_TMPFILE");
	create.diff_storage_limit_sect = 1 << 11;
	create.diff_storage_fd = storage;
	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_CREATE, &create) < 0)
		die("IOCTL_BLKSNAP_SNAPSHOT_CREATE (overflow)");
	close(storage);
	memcpy(&add.id, &create.id, sizeof(add.id));
	ctl(dev, blkfilter_ctl_blksnap_snapshotadd, &add, sizeof(add));
	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_TAKE, &create.id) < 0)
		die("IOCTL_BLKSNAP_SNAPSHOT_TAKE (overflow)");
	for (int i = 0; i < 8; i++)
		if (pwrite(dev, data, LEN, (off_t)i * LEN) != LEN)
			die("pwrite (overflow)");
	if (fsync(dev) < 0)
		die("fsync");
	for (;;) {
		memset(ev, 0, sizeof(*ev));
		memcpy(&ev->id, &create.id, sizeof(ev->id));
		ev->timeout_ms = 2000;
		if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, ev) < 0) {
			if (errno == ENOENT)
				break;
			die("IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT");
		}
		if (ev->code != blksnap_event_code_corrupted) {
			fprintf(stderr, "v6client: event code %u, which v6 does not define\n",
				ev->code);
			bad = 1;
			continue;
		}
		memcpy(&c, ev->data, sizeof(c));
		printf("event corrupted: %u:%u, %s (%d)\n", c.dev_id_mj,
		       c.dev_id_mn, strerror(c.err_code), c.err_code);
		if (c.err_code != ENOSPC) {
			fprintf(stderr, "v6client: err_code %d, not ENOSPC (%d)\n",
				c.err_code, ENOSPC);
			bad = 1;
		}
		corrupted++;
	}
	if (corrupted != 1) {
		fprintf(stderr, "v6client: %d corrupted events, expected 1\n",
			corrupted);
		bad = 1;
	}
	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_DESTROY, &create.id) < 0)
		die("IOCTL_BLKSNAP_SNAPSHOT_DESTROY (overflow)");
	free(ev);
	return bad;
}

static void pread_all(int fd, char *buf, size_t len, off_t off)
{
	if (pread(fd, buf, len, off) != (ssize_t)len)
		die("pread");
}

int main(int argc, char **argv)
{
	struct blksnap_snapshot_create create = { 0 };
	struct blksnap_snapshot_collect collect = { 0 };
	struct blksnap_snapshotinfo info = { 0 };
	struct blksnap_snapshotadd add;
	struct blkfilter_name name = { 0 };
	struct blksnap_version ver;
	char *before, *after, *image;
	char path[64];
	struct stat st;
	int ctrl, dev, img, storage, rnd;

	if (argc != 3) {
		fprintf(stderr, "usage: v6client DEVICE STORAGE_DIR\n");
		return 2;
	}
	before = malloc(LEN);
	after = malloc(LEN);
	image = malloc(LEN);
	if (!before || !after || !image)
		die("malloc");

	ctrl = open("/dev/blksnap-control", O_RDWR);
	if (ctrl < 0)
		die("open /dev/blksnap-control");
	if (ioctl(ctrl, IOCTL_BLKSNAP_VERSION, &ver) < 0)
		die("IOCTL_BLKSNAP_VERSION");
	printf("version %u.%u.%u.%u\n", ver.major, ver.minor, ver.revision,
	       ver.build);

	dev = open(argv[1], O_RDWR);
	if (dev < 0 || fstat(dev, &st) < 0)
		die(argv[1]);
	strncpy((char *)name.name, "blksnap", sizeof(name.name));
	if (ioctl(dev, BLKFILTER_ATTACH, &name) < 0 && errno != EALREADY)
		die("BLKFILTER_ATTACH");

	storage = open(argv[2], O_TMPFILE | O_RDWR, 0600);
	if (storage < 0)
		die("O_TMPFILE");
	create.diff_storage_limit_sect = 64 << 11;
	create.diff_storage_fd = storage;
	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_CREATE, &create) < 0)
		die("IOCTL_BLKSNAP_SNAPSHOT_CREATE");
	/* The kernel keeps its own reference. */
	close(storage);

	memcpy(&add.id, &create.id, sizeof(add.id));
	ctl(dev, blkfilter_ctl_blksnap_snapshotadd, &add, sizeof(add));
	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_COLLECT, &collect) < 0)
		die("IOCTL_BLKSNAP_SNAPSHOT_COLLECT");
	printf("snapshots: %u\n", collect.count);

	pread_all(dev, before, LEN, 0);
	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_TAKE, &create.id) < 0)
		die("IOCTL_BLKSNAP_SNAPSHOT_TAKE");
	ctl(dev, blkfilter_ctl_blksnap_snapshotinfo, &info, sizeof(info));
	printf("image %s, error %d\n", info.image, info.error_code);

	rnd = open("/dev/urandom", O_RDONLY);
	if (rnd < 0 || read(rnd, after, LEN) != LEN)
		die("/dev/urandom");
	if (pwrite(dev, after, LEN, 0) != LEN || fsync(dev) < 0)
		die("pwrite");

	snprintf(path, sizeof(path), "/dev/%s", (char *)info.image);
	img = -1;
	for (int i = 0; i < 50 && img < 0; i++) {
		img = open(path, O_RDONLY);
		if (img < 0)
			usleep(100000);
	}
	if (img < 0)
		die(path);
	pread_all(img, image, LEN, 0);
	close(img);
	if (memcmp(image, before, LEN)) {
		fprintf(stderr, "v6client: the image differs from the data of the take\n");
		return 1;
	}
	printf("image holds the data of the take\n");

	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_DESTROY, &create.id) < 0)
		die("IOCTL_BLKSNAP_SNAPSHOT_DESTROY");
	if (ioctl(ctrl, IOCTL_BLKSNAP_SNAPSHOT_DESTROY, &create.id) == 0 ||
	    errno != ESRCH) {
		fprintf(stderr, "v6client: destroying twice did not fail with ESRCH\n");
		return 1;
	}
	if (overflow(ctrl, dev, argv[2], after))
		return 1;
	printf("overflow: only v6's events\n");

	if (ioctl(dev, BLKFILTER_DETACH, &name) < 0)
		die("BLKFILTER_DETACH");
	printf("v6client: passed (device %u:%u)\n", major(st.st_rdev),
	       minor(st.st_rdev));
	return 0;
}
