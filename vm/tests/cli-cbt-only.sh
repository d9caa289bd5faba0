#!/bin/bash
# vm: --disk 64M --timeout 300 --append blksnap.tracking_block_minimum_shift=12
# vm-requires: CONFIG_BLKSNAP
# The change-tracking commands of the blksnap tool against the real kernel,
# without snapshots: version, attach, cbtinfo (text and JSON), readcbtmap
# (runs, --all, --newer-than, --output, JSON), markdirtyblock with sector
# ranges (refused past the end), detach, re-attach (a new generation), and
# the exit statuses for a missing device, a path that is not a block device,
# a bad command line and an unprivileged caller. cli-cbt.sh covers the rest
# once snapshots exist. Until the first snapshot take the readable map is
# all zeroes with changes number 0 (docs/blksnap-tool.md), so that is what
# the map commands must show.
set -euo pipefail
. "$(dirname "$0")/lib/cbt.sh"

need_tool
DISK=${SCRATCH_DISKS%% *}
[ -b "$DISK" ] || fail "no scratch disk '$DISK'"
SIZE=$(blockdev --getsize64 "$DISK")
WORK=$(mktemp -d /tmp/cli-cbt-only.XXXXXX)
trap '"$BIN" detach "$DISK" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

step "version"
bs version | grep -q '^blksnap interface 2\.0\.0\.0, tool ' || fail "version output"
[ "$(bs --json version | json_field '"%(major)d.%(minor)d.%(revision)d.%(build)d" % d["version"]')" = 2.0.0.0 ] ||
	fail "JSON version"

step "attach"
bs_status 1 cbtinfo "$DISK"
bs_status 1 readcbtmap "$DISK"
bs_status 1 markdirtyblock --sectors 0:1 "$DISK"
bs_status 1 detach "$DISK"
bs attach "$DISK" | grep -qx "$DISK: attached" || fail "attach did not report 'attached'"
bs attach "$DISK" | grep -qx "$DISK: already attached" || fail "second attach did not report 'already attached'"
[ "$(bs --json attach "$DISK" | json_field 'd["result"]')" = already-attached ] || fail "JSON attach result"

step "cbtinfo"
BLOCK=$(cbt_field "$DISK" block_size)
COUNT=$(cbt_field "$DISK" block_count)
GEN=$(cbt_field "$DISK" generation_id)
[ "$(cbt_field "$DISK" device_capacity)" -eq "$SIZE" ] || fail "capacity differs from $SIZE"
[ "$BLOCK" -eq 4096 ] || fail "block size $BLOCK, the command line asks for 4096"
[ "$COUNT" -eq $((SIZE / BLOCK)) ] || fail "block count $COUNT for $SIZE bytes"
[ "$(cbt_field "$DISK" changes_number)" -eq 0 ] || fail "changes number is not 0"
[[ $GEN =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] ||
	fail "generation '$GEN' is not a random UUID"
bs --json cbtinfo "$DISK" >"$WORK/info.json"
[ "$(json_field '(d["block_size"], d["block_count"], d["device_capacity"], d["changes_number"])' <"$WORK/info.json")" = "($BLOCK, $COUNT, $SIZE, 0)" ] ||
	fail "JSON cbtinfo: $(cat "$WORK/info.json")"
[ "$(json_field 'd["generation_id"]' <"$WORK/info.json")" = "$GEN" ] || fail "JSON generation differs"

# check_map_empty: the readable map, through every form of readcbtmap, is
# all zeroes (no snapshot taken yet).
check_map_empty() {
	[ -z "$(bs readcbtmap "$DISK")" ] || fail "readcbtmap lists blocks"
	[ -z "$(bs readcbtmap --newer-than 0 "$DISK")" ] || fail "readcbtmap --newer-than 0 lists blocks"
	[ "$(bs readcbtmap --all "$DISK")" = "0 $COUNT 0" ] || fail "readcbtmap --all is not one run of zeroes"
	bs --json readcbtmap "$DISK" >"$WORK/map.json"
	[ "$(json_field '(d["block_count"], d["changes_number"], d["runs"])' <"$WORK/map.json")" = "($COUNT, 0, [])" ] ||
		fail "JSON readcbtmap: $(head -c 300 "$WORK/map.json")"
	rm -f "$WORK/map.bin"
	bs readcbtmap --output "$WORK/map.bin" "$DISK"
	[ "$(stat -c %s "$WORK/map.bin")" -eq "$COUNT" ] || fail "raw map is not $COUNT bytes"
	head -c "$COUNT" /dev/zero | cmp -s - "$WORK/map.bin" || fail "raw map is not all zeroes"
}

step "readcbtmap before any write"
check_map_empty

step "writes and markdirtyblock"
write_at "$DISK" $((3 * BLOCK)) 4096
write_at "$DISK" $((SIZE - 512)) 512
bs markdirtyblock --sectors $((20 * BLOCK / 512 + 1)):1 --sectors $((30 * BLOCK / 512)):$((2 * BLOCK / 512)) "$DISK" |
	grep -qx "$DISK: marked 2 range(s), $((512 + 2 * BLOCK)) bytes" || fail "markdirtyblock output"
# A range that runs past the end is cut there; one that starts past the end
# is refused (EINVAL, as in blksnap v6).
bs markdirtyblock --sectors $((SIZE / 512 - 1)):8 "$DISK" >/dev/null
bs_status 1 markdirtyblock --sectors $((SIZE / 512 + 8)):8 "$DISK"
bs_status 1 markdirtyblock --sectors $((SIZE / 512)):1 "$DISK"
[ "$(bs --json markdirtyblock --sectors 0:1 --sectors 16:8 "$DISK" | json_field 'd["sectors"]')" = 9 ] ||
	fail "JSON markdirtyblock"
# Until a snapshot is taken, neither shows in the readable map.
check_map_empty
[ "$(cbt_field "$DISK" generation_id)" = "$GEN" ] || fail "generation changed"

step "bad command lines"
bs_status 2 markdirtyblock "$DISK"
bs_status 2 markdirtyblock --sectors 12 "$DISK"
bs_status 2 markdirtyblock --sectors x:1 "$DISK"
bs_status 2 readcbtmap --newer-than 256 "$DISK"
bs_status 2 cbtinfo
bs_status 2 attach "$DISK" "$DISK"
bs_status 2 markdirtyblock --sectors 0:1 --file /etc/hostname "$DISK"

step "devices that are not there"
bs_status 4 attach /dev/nonexistent-blksnap
bs_status 4 cbtinfo /dev/nonexistent-blksnap
bs_status 4 readcbtmap /dev/nonexistent-blksnap
bs_status 4 markdirtyblock --sectors 0:1 /dev/nonexistent-blksnap
bs_status 4 detach /dev/nonexistent-blksnap
bs_status 4 attach /proc/version
bs_status 4 cbtinfo /proc/version
bs_status 4 readcbtmap /tmp
bs_status 4 detach /dev/null

step "an unprivileged caller"
cp "$BIN" "$WORK/blksnap"
chmod 755 "$WORK" "$WORK/blksnap"
as_nobody() {
	local want=$1 rc=0
	shift
	setpriv --reuid=65534 --regid=65534 --clear-groups "$WORK/blksnap" "$@" >&2 || rc=$?
	[ "$rc" -eq "$want" ] || fail "blksnap $* as nobody exited $rc, expected $want"
}
as_nobody 4 cbtinfo "$DISK" # cannot open the device
chmod o+r "$DISK"
as_nobody 4 cbtinfo "$DISK" # can open it, but has no CAP_SYS_ADMIN
as_nobody 4 detach "$DISK"
as_nobody 4 markdirtyblock --sectors 0:1 "$DISK"
chmod o-r "$DISK"
[ "$(cbt_field "$DISK" generation_id)" = "$GEN" ] || fail "the unprivileged calls changed the tracker"

step "detach and attach again: a new generation"
bs detach "$DISK" | grep -qx "$DISK: detached" || fail "detach did not report 'detached'"
[ -z "$(cat "/sys/block/$(basename "$DISK")/filter")" ] || fail "filter attribute not empty after detach"
bs_status 1 cbtinfo "$DISK"
bs_status 1 detach "$DISK"
[ "$(bs --json attach "$DISK" | json_field 'd["result"]')" = attached ] || fail "JSON attach result"
GEN2=$(cbt_field "$DISK" generation_id)
[ "$GEN2" != "$GEN" ] || fail "generation did not change after re-attach"
check_map_empty
bs detach "$DISK" >/dev/null
echo "PASS: cli-cbt-only"
