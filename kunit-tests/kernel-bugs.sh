#!/usr/bin/env bash
# Fail when a kernel console log holds a bug report (the pattern of
# vm/boot-check.sh: oops, BUG, KASAN, KFENCE, UBSAN, WARN, lockdep, hung
# task). Prints the first report with some context.
#
# usage: kunit-tests/kernel-bugs.sh CONSOLE_LOG
set -euo pipefail
logf=${1:?usage: $0 CONSOLE_LOG}
. "$(dirname "$0")/../vm/boot-check.sh"
if line=$(grep -n -m1 -E "$oops" "$logf"); then
	n=${line%%:*}
	echo "error: the kernel reported a bug in $logf (line $n):" >&2
	sed -n "$n,$((n + 25))p" "$logf" >&2
	exit 1
fi
