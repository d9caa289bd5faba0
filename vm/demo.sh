#!/bin/bash
# The end-to-end demo, run inside the guest by ci/demo.sh. It shows what
# the fork can do today and grows as capabilities land.
set -euo pipefail
section() { printf '\n=== %s ===\n' "$*"; }

section "kernel"
echo "release:  $(uname -r)"
echo "version:  $(cat /proc/version)"
echo "rust:     $(zcat /proc/config.gz | grep -E '^CONFIG_RUST=' || echo 'CONFIG_RUST not set')"
echo "page:     $(getconf PAGESIZE) bytes"

section "KUnit at boot"
dmesg | grep -E '# (Totals|[a-z0-9_]+: pass:)' | sed 's/^\[[^]]*\] *//' || echo "no KUnit summary in the boot log"

section "blksnap"
if [ ! -e /dev/blksnap-control ]; then
	echo "not in this kernel: no /dev/blksnap-control"
	exit 1
fi
[ -x "${BLKSNAP_BIN:-}" ] || {
	echo "no blksnap tool (BLKSNAP_BIN)"
	exit 1
}
disk=${SCRATCH_DISKS%% *}
bs() {
	echo "+ blksnap $*"
	"$BLKSNAP_BIN" "$@"
}
"$BLKSNAP_BIN" version
work=$(mktemp -d /tmp/demo.XXXXXX)
mount -t tmpfs -o size=1G demo "$work"
trap 'umount "$work"; rmdir "$work"' EXIT
# The guest has no disk to spare: the difference storage is on the tmpfs
# (--allow-tmpfs: without it, blksnap warns that the storage is in memory).
mkdir "$work/diff"

section "change tracking"
bs attach "$disk"
echo "filter attribute: $(cat "/sys/block/$(basename "$disk")/filter")"
echo "+ mkfs.ext4 $disk, 20 files of 1 MiB"
mkfs.ext4 -q -F "$disk"
mkdir "$work/mnt"
mount "$disk" "$work/mnt"
for i in $(seq 20); do head -c 1M /dev/urandom >"$work/mnt/file$i"; done
sync

section "full backup from a snapshot (the file system stays mounted)"
bs backup --repo "$work/repo" --storage "$work/diff" --allow-tmpfs --limit 256M "$disk"
bs cbtinfo "$disk"

section "changes, then an incremental backup"
echo "+ 3 files rewritten, 1 removed, 1 added"
for i in 3 7 11; do head -c 1M /dev/urandom >"$work/mnt/file$i"; done
rm "$work/mnt/file15"
head -c 512K /dev/urandom >"$work/mnt/new"
sync
bs backup --repo "$work/repo" --storage "$work/diff" --allow-tmpfs --limit 256M "$disk"
files() { (cd "$1" && find . -type f | sort | xargs sha256sum); }
files "$work/mnt" >"$work/sums"
umount "$work/mnt"

section "what the repository holds"
bs list --repo "$work/repo"

section "restore into a file and verify"
bs restore --repo "$work/repo" --device "$(basename "$disk")" "$work/restored.img"
# The backup alone, every block of every set of the chain (the device
# itself has moved on: unmounting wrote to it).
bs verify --repo "$work/repo" --device "$(basename "$disk")"
mount -o loop,ro "$work/restored.img" "$work/mnt"
echo "+ sha256sum of the files in the restored image"
files "$work/mnt" | diff - "$work/sums" && echo "all $(wc -l <"$work/sums") files identical"
umount "$work/mnt"

bs detach "$disk"
echo "filter attribute after detach: '$(cat "/sys/block/$(basename "$disk")/filter")'"
