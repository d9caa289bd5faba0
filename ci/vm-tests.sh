#!/usr/bin/env bash
# Run the guest tests of vm/tests/ on the fork's kernel.
#
# usage: ci/vm-tests.sh x86_64|ppc64le|selftest [NAME...]
#
# A test is vm/tests/NAME.sh (x86_64, virtme-ng, the host's user space) or
# vm/tests/NAME-ppc64le.sh (ppc64le, busybox). Header lines say how to run it:
#   # vm: --disk 256M --timeout 300     options for the runner
#   # vm-requires: CONFIG_BLKSNAP       kernel options it needs
#   # vm-pending: REASON                 not run yet (a capability it
#                                        checks has not landed)
# A test whose kernel options are not set, or that is pending, is reported
# as SKIPPED with the reason, and never counted as passed. A test whose guest
# log holds a kernel bug report (oops, KASAN, lockdep, ...) fails (vm/run.sh).
# x86_64 guests get the user-space tool as $BLKSNAP_BIN (built here). "selftest" checks the runner itself:
# a script's status comes back, a panic and a hang are failures.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

what=${1:?usage: $0 x86_64|ppc64le|selftest [name...]}
shift
pass=0 fail=0 skip=0
results=()

record() {
	results+=("$(printf '%-28s %s' "$1" "$2")")
	case $2 in
	PASS*) pass=$((pass + 1)) ;;
	SKIP*) skip=$((skip + 1)) ;;
	*) fail=$((fail + 1)) ;;
	esac
}

expect_status() {
	local name=$1 want=$2
	shift 2
	local rc=0
	VM_QUIET=1 bash "$REPO/vm/run.sh" "$@" >/dev/null 2>&1 || rc=$?
	if [ "$rc" -eq "$want" ]; then
		record "selftest:$name" "PASS (status $rc)"
	else
		record "selftest:$name" "FAIL (status $rc, expected $want)"
	fi
}

if [ "$what" = selftest ]; then
	expect_status exit-status 3 --timeout 300 "$REPO/vm/selftest/exit3.sh"
	expect_status panic 125 --timeout 120 "$REPO/vm/selftest/panic.sh"
	expect_status hang 124 --timeout 60 "$REPO/vm/selftest/hang.sh"
else
	arch=$what
	config=$(build_dir "$arch")/.config
	if [ $# -gt 0 ]; then
		names=("$@")
	else
		names=()
		for f in "$REPO"/vm/tests/*.sh; do
			n=$(basename "$f" .sh)
			case $arch:$n in
			ppc64le:*-ppc64le) names+=("$n") ;;
			x86_64:*-ppc64le | ppc64le:*) ;;
			*) names+=("$n") ;;
			esac
		done
	fi
	if [ "$arch" = x86_64 ]; then
		export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BLKSNAP_CACHE/cargo-target}
		cargo build -q --locked --manifest-path "$REPO/rust-blksnap/Cargo.toml" --bin blksnap ||
			die "cannot build the blksnap tool"
		export BLKSNAP_BIN=$CARGO_TARGET_DIR/debug/blksnap
	fi
	for n in "${names[@]}"; do
		f=$REPO/vm/tests/$n.sh
		[ -f "$f" ] || {
			record "$n" "FAIL (no such test)"
			continue
		}
		pending=$(sed -n 's/^# vm-pending: *//p' "$f" | head -1)
		if [ -n "$pending" ]; then
			record "$n" "SKIP (pending: $pending)"
			continue
		fi
		missing=()
		for opt in $(sed -n 's/^# vm-requires: *//p' "$f"); do
			grep -qx "$opt=y" "$config" || missing+=("$opt")
		done
		if [ ${#missing[@]} -gt 0 ]; then
			record "$n" "SKIP (kernel lacks ${missing[*]})"
			continue
		fi
		read -ra opts <<<"$(sed -n 's/^# vm: *//p' "$f" | head -1)"
		# A debug kernel (KASAN, lockdep) is slower: triple the timeout.
		if [ -n "${BLKSNAP_FLAVOUR:-}" ]; then
			for i in "${!opts[@]}"; do
				[ "${opts[$i]}" != --timeout ] || opts[i + 1]=$((opts[i + 1] * 3))
			done
		fi
		logf=$BLKSNAP_CACHE/results/vm-$arch$FLAVOUR_SUFFIX/$n.log
		mkdir -p "$(dirname "$logf")"
		rc=0
		if [ "$arch" = ppc64le ]; then
			bash "$REPO/vm/run-ppc64le.sh" "${opts[@]}" --log "$logf" "$f" || rc=$?
		else
			VM_QUIET=1 bash "$REPO/vm/run.sh" "${opts[@]}" --log "$logf" "$f" || rc=$?
		fi
		if [ "$rc" -eq 0 ]; then
			record "$n" "PASS"
		else
			record "$n" "FAIL (status $rc, log $logf)"
			echo "--- last lines of $logf:" >&2
			tail -n 40 "$logf" >&2
		fi
	done
fi

echo
echo "VM tests ($what):"
printf '  %s\n' "${results[@]}"
echo "vm-tests: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
