# shellcheck shell=bash
# What vm/run.sh reads in a guest's console log. Source it; do not run it.

# A kernel bug report: an oops or BUG (KASAN and KFENCE reports start with
# "BUG:"), a panic, a WARN, a lockdep or RCU-lockdep splat, UBSAN, a hung
# task. Kernel messages carry a timestamp (CONFIG_PRINTK_TIME): only those
# count. kunit-tests/kernel-bugs.sh uses the same pattern. A WARN reads
# "WARNING: FILE:LINE at FUNC, CPU#N: ..." or "WARNING: at FUNC, CPU#N: ..."
# since 6.19 ("WARNING: CPU: N PID: ..." before).
# shellcheck disable=SC2034
oops='^\[ *[0-9]+\.[0-9]+\] (Kernel panic|BUG: |Oops|WARNING: ([^ ]+:[0-9]+ at |at |CPU: |possible |inconsistent lock state|suspicious RCU usage)|general protection fault|UBSAN: |kernel BUG at|INFO: task .* blocked for more than)'

# failed_while_booting LOG [MARK]: whether the kernel reported a bug before
# the first line that matches the extended regex MARK (by default the guest
# wrapper's "guest: " line, which starts the script; vm/qemu.sh gives
# KUnit's "KTAP version"), or never got there.
# The wrapper's start line, in the kernel log (with a timestamp) or on its own.
# shellcheck disable=SC2034
guest_mark='(^|\] )guest: '
failed_while_booting() {
	local bug start
	bug=$(grep -m1 -nE "$oops" "$1" | cut -d: -f1)
	[ -n "$bug" ] || return 1
	start=$(grep -m1 -nE "${2:-$guest_mark}" "$1" | cut -d: -f1)
	[ -z "$start" ] || [ "$bug" -lt "$start" ]
}
