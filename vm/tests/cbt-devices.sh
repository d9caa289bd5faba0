#!/bin/bash
# vm: --disk 64M --disk 64M --disk 16M --timeout 600 --append blksnap.tracking_block_minimum_shift=12
# vm-requires: CONFIG_BLKSNAP
# The change tracker on the kinds of block devices it meets: a virtio disk, a
# loop device backed by a tmpfs file, a partition of a virtio disk, null_blk.
# On each: attach with the blksnap tool, the sysfs "filter" attribute, the
# geometry cbtinfo reports, direct writes at known places reaching the right
# sectors through the filter, the readable map, detach. Then devices that go
# away while a filter is attached (loop detach, partition deletion, null_blk
# power-off and removal, virtio PCI unplug): the tracker must be released
# ("tracking stopped") and the kernel must not complain (the runner fails on
# any oops or WARN in the console).
#
# The readable CBT map is the copy frozen at the last snapshot take (see
# docs/blksnap-tool.md and rust-blksnap/driver/cbt.rs). No snapshot is taken
# here, so the marks that writes leave in the active map are not visible
# from user space: the test checks that the readable map stays all zeroes
# with changes number 0, as documented, and that the written data is where
# it belongs (snapshot-subpage and cli-cbt read the marks after takes).
set -euo pipefail
. "$(dirname "$0")/lib/cbt.sh"

need_tool
read -r VDA VDB VDC <<<"$SCRATCH_DISKS"
for d in "$VDA" "$VDB" "$VDC"; do [ -b "$d" ] || fail "no scratch disk $d"; done
command -v sfdisk >/dev/null || fail "sfdisk is missing (Debian package fdisk, see ci/bootstrap.sh)"

WORK=$(mktemp -d /tmp/cbt-devices.XXXXXX)
mount -t tmpfs -o size=256M cbt-devices "$WORK"
LOOP=""
NULLCFG=$NULLB_CFG
cleanup() {
	[ -z "$LOOP" ] || losetup -d "$LOOP" 2>/dev/null || true
	for c in "$NULLCFG"/cbt-*; do [ -d "$c" ] && rmdir "$c" 2>/dev/null; done
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
head -c $((1 << 20)) /dev/urandom >"$WORK/pattern"

# Number of trackers released so far (the driver logs each one).
stopped() { dmesg | grep -c 'blksnap: .*tracking stopped' || true; }
# wait_stopped N WHAT: waits until N trackers have been released.
wait_stopped() {
	local i
	for i in $(seq 50); do
		[ "$(stopped)" -ge "$1" ] && return 0
		sleep 0.1
	done
	fail "$2: the tracker was not released ($(stopped) released, expected $1)"
}
attr_is() {
	local got
	got=$(cat "$1")
	[ "$got" = "$2" ] || fail "$1 reads '$got', expected '$2'"
}

# check_device DEV ATTR [nodata]: the whole attach / write / read / detach
# cycle; "nodata" for a device that does not keep what is written.
check_device() {
	local dev=$1 attr=$2 nodata=${3:-} size block count exp off
	step "$dev: attach"
	[ -f "$attr" ] || fail "$attr does not exist"
	attr_is "$attr" ""
	bs attach "$dev" | grep -qx "$dev: attached" || fail "attach of $dev did not report 'attached'"
	attr_is "$attr" blksnap
	bs attach "$dev" | grep -qx "$dev: already attached" || fail "second attach of $dev"
	attr_is "$attr" blksnap

	size=$(blockdev --getsize64 "$dev")
	block=$(cbt_field "$dev" block_size)
	count=$(cbt_field "$dev" block_count)
	[ "$(cbt_field "$dev" device_capacity)" -eq "$size" ] || fail "$dev: capacity differs from $size"
	[ "$block" -eq 4096 ] || fail "$dev: block size $block, the command line asks for 4096"
	[ "$count" -eq $(((size + block - 1) / block)) ] || fail "$dev: $count blocks do not cover $size bytes"
	[ "$(cbt_field "$dev" changes_number)" -eq 0 ] || fail "$dev: changes number is not 0"
	step "$dev: $count blocks of $block bytes"

	# The same writes go to the device and to an image of what it must hold.
	exp=$WORK/expect.img
	rm -f "$exp"
	truncate -s "$size" "$exp"
	for off in "$((block + 512)):512" "$((5 * block - 4096)):$((block + 8192))" "$((size - 4096)):4096"; do
		write_at "$dev" "${off%:*}" "${off#*:}" "$WORK/pattern"
		write_at "$exp" "${off%:*}" "${off#*:}" "$WORK/pattern"
	done
	# Blocks 1, 4-6 and the last one are written; the readable map is the
	# frozen copy, all zeroes before the first snapshot.
	bs readcbtmap --output "$WORK/map.bin" "$dev" >/dev/null
	[ "$(stat -c %s "$WORK/map.bin")" -eq "$count" ] || fail "$dev: raw map is not $count bytes"
	head -c "$count" /dev/zero | cmp -s - "$WORK/map.bin" || fail "$dev: readable map is not all zeroes before a snapshot"
	[ -z "$(bs readcbtmap "$dev")" ] || fail "$dev: readcbtmap lists blocks before a snapshot"
	[ "$(bs readcbtmap --all "$dev")" = "0 $count 0" ] || fail "$dev: readcbtmap --all is not one run of zeroes"
	bs markdirtyblock --sectors $((10 * block / 512)):1 "$dev"
	[ -z "$(bs readcbtmap "$dev")" ] || fail "$dev: markdirtyblock showed up before a snapshot"
	[ "$(cbt_field "$dev" changes_number)" -eq 0 ] || fail "$dev: changes number moved without a snapshot"
	[ -n "$nodata" ] || cmp "$dev" "$exp" || fail "$dev: data differs from what was written"

	step "$dev: detach"
	bs detach "$dev" | grep -qx "$dev: detached" || fail "detach of $dev"
	attr_is "$attr" ""
	bs_status 1 cbtinfo "$dev"
	bs_status 1 detach "$dev"
}

step "virtio disk"
check_device "$VDA" "/sys/block/$(basename "$VDA")/filter"

step "loop device on tmpfs"
truncate -s 32M "$WORK/loop.img"
LOOP=$(losetup -f --show "$WORK/loop.img")
LNAME=$(basename "$LOOP")
check_device "$LOOP" "/sys/block/$LNAME/filter"
cmp "$WORK/loop.img" "$WORK/expect.img" || fail "the loop device's backing file differs"

step "partition of a virtio disk"
echo 'start=2048, size=65536, type=83' | sfdisk -q "$VDB"
PART=${VDB}1
PNAME=$(basename "$PART")
DNAME=$(basename "$VDB")
for _ in $(seq 50); do [ -b "$PART" ] && break; sleep 0.1; done
[ -b "$PART" ] || fail "no partition $PART"
[ "$(cat "/sys/class/block/$PNAME/start")" -eq 2048 ] || fail "$PART does not start at sector 2048"
attr_is "/sys/block/$DNAME/filter" ""
bs attach "$PART" >/dev/null
attr_is "/sys/class/block/$PNAME/filter" blksnap
attr_is "/sys/block/$DNAME/filter" "" # the whole disk has no filter of its own
bs detach "$PART" >/dev/null
check_device "$PART" "/sys/class/block/$PNAME/filter"
# The partition's writes landed at its offset on the disk.
cmp -i $((2048 * 512)):0 -n $((65536 * 512)) "$VDB" "$WORK/expect.img" ||
	fail "the data written through $PART is not at its place on $VDB"

step "removal while attached: loop device"
n=$(stopped)
bs attach "$LOOP" >/dev/null
attr_is "/sys/block/$LNAME/filter" blksnap
losetup -d "$LOOP"
wait_stopped $((n + 1)) "losetup -d $LOOP"
attr_is "/sys/block/$LNAME/filter" ""
LOOP=""

step "removal while attached: partition deleted"
n=$(stopped)
bs attach "$PART" >/dev/null
sfdisk -q --delete "$VDB" 1
for _ in $(seq 50); do [ -e "/sys/class/block/$PNAME" ] || break; sleep 0.1; done
[ ! -e "/sys/class/block/$PNAME" ] || fail "$PART still exists after its deletion"
wait_stopped $((n + 1)) "deleting $PART"
attr_is "/sys/block/$DNAME/filter" ""

# Direct writes in a loop until the device fails them (it went away; nocreat:
# dd must not make a regular file where the device node was).
writer() {
	local i=0
	while dd if="$WORK/pattern" of="$1" bs=4096 count=8 seek=$((i % 2048)) \
		oflag=direct conv=notrunc,nocreat status=none 2>/dev/null; do
		i=$((i + 8))
	done
}
# reap_writer PID WHAT: the writer must stop by itself once its device is
# gone.
reap_writer() {
	local i
	for i in $(seq 100); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$1" 2>/dev/null; then
		kill "$1"
		fail "$2: writes still succeed 10 s after the removal"
	fi
	wait "$1" || true
}

for how in power rmdir; do
	step "removal while attached and written: null_blk ($how)"
	NB=$(basename "$(make_nullb "cbt-$how" 64 0)")
	[ -b "/dev/$NB" ] || fail "no /dev/$NB"
	check_device "/dev/$NB" "/sys/block/$NB/filter" nodata
	n=$(stopped)
	bs attach "/dev/$NB" >/dev/null
	writer "/dev/$NB" &
	wpid=$!
	sleep 1
	kill -0 "$wpid" 2>/dev/null || fail "writes to /dev/$NB stopped early"
	if [ "$how" = power ]; then
		echo 0 >"$NULLCFG/cbt-$how/power"
	fi
	rmdir "$NULLCFG/cbt-$how"
	reap_writer "$wpid" "null_blk $NB ($how)"
	wait_stopped $((n + 1)) "null_blk $NB ($how)"
	[ ! -e "/sys/block/$NB" ] || fail "$NB still exists"
done

step "removal while attached and written: virtio PCI unplug of $VDC"
CNAME=$(basename "$VDC")
PCIDEV=$(readlink -f "/sys/block/$CNAME/device/..")
[ -f "$PCIDEV/remove" ] || fail "no PCI device behind $VDC ($PCIDEV)"
n=$(stopped)
bs attach "$VDC" >/dev/null
writer "$VDC" &
wpid=$!
sleep 1
echo 1 >"$PCIDEV/remove"
reap_writer "$wpid" "unplugging $VDC"
wait_stopped $((n + 1)) "unplugging $VDC"
[ ! -e "/sys/block/$CNAME" ] || fail "$CNAME still exists"

dmesg | grep 'blksnap: .*tracking stopped' | tail -3
echo "PASS: cbt-devices"
