#!/usr/bin/env bash
# Host test of vm/boot-check.sh: which console logs count as a kernel that
# failed while booting (booted again by vm/run.sh) and which as a failure of
# the test itself.
set -euo pipefail
. "$(dirname "$0")/boot-check.sh"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fails=0
expect() {
	local want=$1 name=$2 got=no
	shift 2
	printf '%s\n' "$@" >"$log"
	failed_while_booting "$log" && got=yes
	if [ "$got" = "$want" ]; then
		echo "ok   $name"
	else
		echo "FAIL $name: expected $want, got $got"
		fails=$((fails + 1))
	fi
}
expect yes "report before the script" "[    0.003578] BUG: KASAN: wild-memory-access" "guest: 7.3.4-blksnap"
expect yes "panic, no script" "[   10.27] Oops: int3: 0000 [#1] SMP" "[   10.30] Kernel panic - not syncing"
expect no "report while the script runs" "guest: 7.3.4-blksnap" "[    5.10] BUG: kernel NULL pointer dereference"
expect no "clean boot" "[    0.10] Linux version 7.3.4-blksnap" "guest: 7.3.4-blksnap" "PASS"
expect no "no timestamp is no kernel report" "BUG: in the script's own output" "guest: x"
expect yes "WARN of 7.3 before the script" \
	"[    0.51] WARNING: block/blk-filter.c:210 at blkfilter_attach+0x5e/0x1f0, CPU#1: swapper/0/1" \
	"guest: 7.3.4-blksnap"
expect yes "WARN of 7.3 without a file" "[    0.51] WARNING: at rust_helper_WARN_ON+0x1c/0x30, CPU#0: init/1"
n=7
[ "$fails" -eq 0 ] && echo "$n passed, 0 failed" || { echo "$((n - fails)) passed, $fails failed"; exit 1; }
