#!/usr/bin/env bash
# Fail when a kernel console log holds a bug report: an oops, a BUG, a
# KASAN, KFENCE or UBSAN report, a lockdep splat, a hung task. Prints the
# first report with some context.
#
# usage: kunit-tests/kernel-bugs.sh CONSOLE_LOG
set -euo pipefail
logf=${1:?usage: $0 CONSOLE_LOG}
re='(BUG:|Oops:|Kernel panic|KASAN:|KFENCE:|UBSAN:|possible circular locking|possible recursive locking|inconsistent lock state|suspicious RCU usage|blocked for more than)'
if line=$(grep -n -m1 -E "$re" "$logf"); then
	n=${line%%:*}
	echo "error: the kernel reported a bug in $logf (line $n):" >&2
	sed -n "$n,$((n + 25))p" "$logf" >&2
	exit 1
fi
