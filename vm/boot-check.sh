# shellcheck shell=bash
# What vm/run.sh reads in a guest's console log. Source it; do not run it.

# A kernel bug report. Kernel messages carry a timestamp
# (CONFIG_PRINTK_TIME): only those count.
# shellcheck disable=SC2034
oops='^\[ *[0-9]+\.[0-9]+\] (Kernel panic|BUG: |Oops|WARNING: CPU: |general protection fault|UBSAN: |kernel BUG at)'

# failed_while_booting LOG: whether the kernel reported a bug before the
# guest wrapper started the script (its "guest: " line), or never got there.
failed_while_booting() {
	local bug start
	bug=$(grep -m1 -nE "$oops" "$1" | cut -d: -f1)
	[ -n "$bug" ] || return 1
	start=$(grep -m1 -n '^guest: ' "$1" | cut -d: -f1)
	[ -z "$start" ] || [ "$bug" -lt "$start" ]
}
