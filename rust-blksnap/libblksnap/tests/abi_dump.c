// SPDX-License-Identifier: GPL-2.0
/*
 * Prints the layout of the fork's blksnap UAPI headers as the C compiler
 * sees it, one "name value" line per fact, for tests/abi.rs to compare.
 */
#include <stddef.h>
#include <stdio.h>
#include <linux/blk-filter.h>
#include <linux/blksnap.h>

#define SIZE(t) printf("size %s %zu\n", #t, sizeof(struct t))
#define OFF(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(struct t, f))
#define IOCTL(n) printf("ioctl %s 0x%lx\n", #n, (unsigned long)(n))
#define CONST(n) printf("const %s %ld\n", #n, (long)(n))

int main(void)
{
	SIZE(blkfilter_name);
	SIZE(blkfilter_ctl);
	OFF(blkfilter_ctl, cmd);
	OFF(blkfilter_ctl, optlen);
	OFF(blkfilter_ctl, opt);
	SIZE(blksnap_uuid);
	SIZE(blksnap_cbtinfo);
	OFF(blksnap_cbtinfo, block_size);
	OFF(blksnap_cbtinfo, block_count);
	OFF(blksnap_cbtinfo, generation_id);
	OFF(blksnap_cbtinfo, changes_number);
	SIZE(blksnap_cbtmap);
	OFF(blksnap_cbtmap, length);
	OFF(blksnap_cbtmap, buffer);
	SIZE(blksnap_sectors);
	OFF(blksnap_sectors, count);
	SIZE(blksnap_cbtdirty);
	OFF(blksnap_cbtdirty, dirty_sectors);
	SIZE(blksnap_snapshotadd);
	SIZE(blksnap_snapshotinfo);
	OFF(blksnap_snapshotinfo, image);
	SIZE(blksnap_version);
	OFF(blksnap_version, minor);
	OFF(blksnap_version, revision);
	OFF(blksnap_version, build);
	SIZE(blksnap_snapshot_create);
	OFF(blksnap_snapshot_create, diff_storage_fd);
	OFF(blksnap_snapshot_create, id);
	SIZE(blksnap_snapshot_collect);
	OFF(blksnap_snapshot_collect, ids);
	SIZE(blksnap_snapshot_event);
	OFF(blksnap_snapshot_event, timeout_ms);
	OFF(blksnap_snapshot_event, code);
	OFF(blksnap_snapshot_event, time_label);
	OFF(blksnap_snapshot_event, data);
	SIZE(blksnap_event_corrupted);
	OFF(blksnap_event_corrupted, dev_id_mn);
	OFF(blksnap_event_corrupted, err_code);
	SIZE(blksnap_event_no_space);
	OFF(blksnap_event_no_space, limit_sect);
	SIZE(blksnap_snapshot_events);
	OFF(blksnap_snapshot_events, mask);
	IOCTL(IOCTL_BLKSNAP_VERSION);
	IOCTL(IOCTL_BLKSNAP_SNAPSHOT_CREATE);
	IOCTL(IOCTL_BLKSNAP_SNAPSHOT_DESTROY);
	IOCTL(IOCTL_BLKSNAP_SNAPSHOT_TAKE);
	IOCTL(IOCTL_BLKSNAP_SNAPSHOT_COLLECT);
	IOCTL(IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT);
	IOCTL(IOCTL_BLKSNAP_SNAPSHOT_EVENTS);
	IOCTL(BLKFILTER_ATTACH);
	IOCTL(BLKFILTER_DETACH);
	IOCTL(BLKFILTER_CTL);
	CONST(blkfilter_ctl_blksnap_cbtinfo);
	CONST(blkfilter_ctl_blksnap_cbtmap);
	CONST(blkfilter_ctl_blksnap_cbtdirty);
	CONST(blkfilter_ctl_blksnap_snapshotadd);
	CONST(blkfilter_ctl_blksnap_snapshotinfo);
	CONST(blksnap_event_code_corrupted);
	CONST(blksnap_event_code_no_space);
	CONST(BLKFILTER_NAME_LENGTH);
	CONST(IMAGE_DISK_NAME_LEN);
	printf("string BLKSNAP_CTL %s\n", BLKSNAP_CTL);
	printf("string BLKSNAP_IMAGE_NAME %s\n", BLKSNAP_IMAGE_NAME);
	printf("string BLKSNAP_FILTER_NAME %s\n", BLKSNAP_FILTER_NAME);
	return 0;
}
