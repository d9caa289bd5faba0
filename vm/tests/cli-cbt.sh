#!/usr/bin/env bash
# Guest-side test of the blksnap command against the fork's kernel: the CBT
# map across snapshots, the snapshot subcommands, and full + incremental
# backups restored and compared byte for byte. The commands that need no
# snapshot (and their errors) are tested by cli-cbt-only.sh.
#
# usage (as root, in a guest running the fork):
#   BLKSNAP_BIN=/path/to/blksnap vm/tests/cli-cbt.sh /dev/vdb
# The disk (default: the first of $SCRATCH_DISKS) is overwritten. It should
# be 64-512 MiB: the backups, a restored image and the difference storage
# live in a tmpfs of about five times its size.
# Exit status: 0 when every check passed, non-zero at the first mismatch.
# vm: --disk 128M --timeout 900
# vm-requires: CONFIG_BLKSNAP
set -euo pipefail

DISK=${1:-${SCRATCH_DISKS%% *}}
. "$(dirname "$0")/lib/cbt.sh"
# Value of "key: value" in cbtinfo output of the disk.
cbt() { cbt_field "$DISK" "$1"; }

[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -n "$DISK" ] && [ -b "$DISK" ] || fail "no scratch block device given ('$DISK')"
need_tool
command -v python3 >/dev/null || fail "python3 is needed to read JSON output"

NAME=$(basename "$(readlink -f "$DISK")")
SIZE=$(blockdev --getsize64 "$DISK")
[ "$SIZE" -ge $((64 << 20)) ] && [ "$SIZE" -le $((512 << 20)) ] ||
	fail "$DISK holds $SIZE bytes; use a 64-512 MiB scratch disk"

WORK=$(mktemp -d /tmp/cli-cbt.XXXXXX)
mount -t tmpfs -o size=$((5 * SIZE + (64 << 20))) cli-cbt "$WORK"
cleanup() {
	"$BIN" detach "$DISK" >/dev/null 2>&1 || true
	umount "$WORK" 2>/dev/null || true
	rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
REPO=$WORK/repo
mkdir "$WORK/diff"
# The guest has no disk to spare: the difference storage is on the tmpfs,
# which the tool takes only when told (--allow-tmpfs).
STORAGE=(--storage "$WORK/diff" --allow-tmpfs --limit 256M)

step "version and attach"
bs version
"$BIN" detach "$DISK" >/dev/null 2>&1 || true
dd if=/dev/zero of="$DISK" bs=1M count=$((SIZE >> 20)) oflag=direct status=none
bs attach "$DISK" | grep -qx "$DISK: attached" || fail "attach did not report 'attached'"

BLOCK=$(cbt block_size)
COUNT=$(cbt block_count)
CAP=$(cbt device_capacity)
GEN0=$(cbt generation_id)
step "CBT: $COUNT blocks of $BLOCK bytes, capacity $CAP, generation $GEN0"
[ "$CAP" -eq "$SIZE" ] || fail "cbtinfo capacity $CAP, device has $SIZE"
[ "$COUNT" -eq $(((SIZE + BLOCK - 1) / BLOCK)) ] || fail "block count $COUNT does not cover $SIZE bytes"
[ "$COUNT" -ge 24 ] || fail "only $COUNT CBT blocks; the test needs 24 (bigger disk or smaller blocks)"

step "first backup (full)"
bs backup --repo "$REPO" "${STORAGE[@]}" "$DISK" | tee "$WORK/b1.txt"
grep -q "$NAME: Full" "$WORK/b1.txt" || fail "first backup is not full"
N1=$(cbt changes_number)
[ "$N1" -ge 1 ] || fail "changes number $N1 after a snapshot"
[ -z "$(bs readcbtmap --newer-than "$N1" "$DISK")" ] || fail "map has blocks newer than its own snapshot"

step "writes at known places"
LAST=$((COUNT - 1))
write_at "$DISK" $((3 * BLOCK + 4096)) 4096                  # block 3
write_at "$DISK" $((10 * BLOCK + BLOCK / 2)) $((2 * BLOCK))  # blocks 10, 11, 12
write_at "$DISK" $((SIZE - 4096)) 4096                       # the last block
# The readable map is the copy frozen at the last take: no change yet.
[ -z "$(bs readcbtmap --newer-than "$N1" "$DISK")" ] || fail "map changed before a new snapshot"
bs markdirtyblock --sectors $((20 * BLOCK / 512 + 1)):1 "$DISK" # block 20
EXPECT=$(printf '%s\n' 3 10 11 12 20 "$LAST" | sort -n)

step "second backup (incremental)"
bs --json backup --repo "$REPO" "${STORAGE[@]}" "$DISK" >"$WORK/b2.json"
N2=$(cbt changes_number)
[ "$N2" -eq $((N1 + 1)) ] || fail "changes number went from $N1 to $N2"
GOT=$(bs readcbtmap --newer-than "$N1" "$DISK" | expand_runs | sort -n)
[ "$GOT" = "$EXPECT" ] || fail "changed blocks: got [$(echo $GOT)], expected [$(echo $EXPECT)]"
bs readcbtmap --newer-than "$N1" "$DISK" | awk -v n="$N2" '$3 != n { exit 1 }' ||
	fail "changed blocks do not carry changes number $N2"
[ "$(json_field 'd["devices"][0]["kind"]' <"$WORK/b2.json")" = incremental ] || fail "second backup is not incremental"
STORED=$(python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))["manifest"]
for first, count in m["stored"]:
    for b in range(first, first + count): print(b)' "$REPO/000002/$(basename "$NAME").json" | sort -n)
[ "$STORED" = "$EXPECT" ] || fail "incremental copied [$(echo $STORED)], expected [$(echo $EXPECT)]"
dd if="$DISK" of="$WORK/state2.img" bs=1M iflag=direct status=none

step "restore and verify"
bs restore --repo "$REPO" --device "$NAME" "$WORK/restored.img"
cmp "$WORK/restored.img" "$DISK" || fail "restored image differs from the device"
bs verify --repo "$REPO" --device "$NAME" "$DISK"
bs verify --repo "$REPO" --device "$NAME"
listed=$(bs list --repo "$REPO")
grep -q "^000002 .*incremental" <<<"$listed" || fail "list does not show set 000002 as an incremental: $listed"
bs_status 1 restore --repo "$REPO" --device "$NAME" "$DISK" # a block device needs --force
write_at "$DISK" $((5 * BLOCK)) 4096 # block 5, after the backup
bs_status 5 verify --repo "$REPO" --device "$NAME" "$DISK"

step "third backup (incremental: block 5 only)"
bs --json backup --repo "$REPO" "${STORAGE[@]}" --incremental "$DISK" >"$WORK/b3.json"
[ "$(json_field 'd["devices"][0]["blocks_copied"]' <"$WORK/b3.json")" -eq 1 ] || fail "third backup copied more than block 5"
rm -f "$WORK/restored.img"
bs restore --repo "$REPO" --device "$NAME" "$WORK/restored.img"
cmp "$WORK/restored.img" "$DISK" || fail "restore of set 3 differs from the device"
bs restore --force --repo "$REPO" --device "$NAME" --set 000002 "$WORK/restored.img"
cmp "$WORK/restored.img" "$WORK/state2.img" || fail "restore of set 2 differs from the device as it was"
rm -f "$WORK/restored.img" "$WORK/state2.img"

step "snapshot subcommands"
ID=$(bs snapshot create "${STORAGE[@]}")
bs snapshot add --id "$ID" "$DISK"
bs snapshot info "$DISK" | grep -q "image: (not taken)" || fail "image before take"
bs snapshot take --id "$ID"
# Not piped into grep -q: grep exits at the id, and the tool, writing the
# lines after it in a second write, dies of SIGPIPE (pipefail fails the
# pipe; seen on ppc64le).
collected=$(bs snapshot collect)
grep -qx "$ID" <<<"$collected" || fail "collect does not list $ID: $collected"
IMAGE=$(bs --json snapshot info "$DISK" | json_field 'd["image_path"]')
[ "$IMAGE" = "/dev/blksnap-image_$(($(stat -c 0x%t "$(readlink -f "$DISK")"))):$(($(stat -c 0x%T "$(readlink -f "$DISK")")))" ] ||
	fail "unexpected image name $IMAGE"
for _ in $(seq 50); do [ -b "$IMAGE" ] && break; sleep 0.1; done
[ -b "$IMAGE" ] || fail "no image device $IMAGE"
dd if="$DISK" of="$WORK/before.img" bs=1M iflag=direct status=none
write_at "$DISK" $((7 * BLOCK)) 8192 # after the take: the image keeps the old data
cmp "$IMAGE" "$WORK/before.img" || fail "snapshot image changed after a write to the device"
rm -f "$WORK/before.img"
bs snapshot wait-event --id "$ID" --timeout 200 | grep -qx timeout || fail "wait-event without event"
bs snapshot watch --id "$ID" >"$WORK/watch.txt" &
WATCH=$!
sleep 1
bs snapshot destroy --id "$ID"
wait "$WATCH" || fail "watch did not end cleanly after destroy"
grep -q "snapshot destroyed" "$WORK/watch.txt" || fail "watch did not report the destruction"
bs_status 1 snapshot wait-event --id "$ID" --timeout 100
[ -z "$(bs snapshot collect)" ] || fail "snapshots left behind"

step "detach, re-attach: a new generation forces a full backup"
bs detach "$DISK"
bs_status 1 cbtinfo "$DISK"
bs attach "$DISK"
[ "$(cbt generation_id)" != "$GEN0" ] || fail "generation did not change after re-attach"
bs backup --repo "$REPO" "${STORAGE[@]}" "$DISK" | tee "$WORK/b4.txt"
grep -q "$NAME: Full" "$WORK/b4.txt" && grep -q "generation changed" "$WORK/b4.txt" ||
	fail "backup after re-attach is not a full one explained by the generation change"
rm -f "$WORK/restored.img"
bs restore --repo "$REPO" --device "$NAME" "$WORK/restored.img"
cmp "$WORK/restored.img" "$DISK" || fail "restore after re-attach differs"
bs detach "$DISK"
echo "PASS: cli-cbt"
