#!/usr/bin/env bash
# Run the guest tests of vm/tests/ on the fork's kernel.
#
# usage: ci/vm-tests.sh x86_64|ppc64le|selftest [--except GLOB]... [NAME...]
#
# A test is vm/tests/NAME.sh, run by vm/run.sh (virtme-ng) on both
# architectures: on x86_64 with the host's user space, on ppc64le (64 KiB
# pages, TCG) with Debian ppc64el user space (ci/ppc-guest.sh). Header lines
# say how to run it:
#   # vm: --disk 256M --timeout 300     options for the runner (timeouts
#                                        are scaled on ppc64le and for a
#                                        debug kernel)
#   # vm-requires: CONFIG_BLKSNAP       kernel options it needs
#   # vm-pending: REASON                 not run yet (a capability it
#                                        checks has not landed)
#   # vm-arch: ARCH... (REASON)          runs on these architectures only;
#                                        the others list it as an exception
# A test whose kernel options are not set, or that is pending, is reported
# as SKIPPED with the reason, and never counted as passed. A test whose guest
# log holds a kernel bug report (oops, KASAN, lockdep, ...) fails (vm/run.sh).
# Guests get the user-space tool as $BLKSNAP_BIN (built here; for ppc64le
# cross-built, with the v6 C client as $V6CLIENT_BIN). "selftest" checks the runner itself:
# a script's status comes back, a panic and a hang are failures.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

what=${1:?usage: $0 x86_64|ppc64le|selftest [--except GLOB]... [name...]}
shift
# --except GLOB: leave the tests whose name matches out of the default
# selection (ci/test.sh runs the xfstests in a stage of their own).
except=()
while [ "${1:-}" = --except ]; do
	except+=("$2")
	shift 2
done
pass=0 fail=0 skip=0
results=() exceptions=()

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
	# The script's output reaches the terminal, and the log keeps the
	# console whole (its first line) with the script's output after it.
	mlog=$BLKSNAP_CACHE/results/vm-selftest-marker.log
	rc=0
	shown=$(bash "$REPO/vm/run.sh" --timeout 300 --log "$mlog" "$REPO/vm/selftest/marker.sh" 2>/dev/null) ||
		rc=$?
	if [ "$rc" -eq 0 ] && grep -q "selftest-marker-4711" <<<"$shown" &&
		head -1 "$mlog" | grep -qE '^\[ *0\.0+\] Linux version' &&
		grep -q "selftest-marker-4711" "$mlog"; then
		record "selftest:output" "PASS (marker shown, log whole)"
	else
		record "selftest:output" "FAIL (status $rc; log $mlog)"
	fi
else
	arch=$what
	config=$(build_dir "$arch")/.config
	case $arch in
	x86_64) factor=1 ;;
	# TCG emulating POWER9 on x86: the guests run several times slower.
	ppc64le) factor=${PPC64LE_TIMEOUT_FACTOR:-4} ;;
	*) die "unknown architecture '$arch'" ;;
	esac
	if [ $# -gt 0 ]; then
		names=("$@")
	else
		names=()
		for f in "$REPO"/vm/tests/*.sh; do
			n=$(basename "$f" .sh)
			for g in "${except[@]}"; do
				# shellcheck disable=SC2053
				[[ $n != $g ]] || continue 2
			done
			archs=$(sed -n 's/^# vm-arch: *//p' "$f" | head -1)
			if [ -n "$archs" ] && ! grep -qw -- "$arch" <<<"${archs%%(*}"; then
				exceptions+=("$(printf '%-28s %s' "$n" "$archs")")
				continue
			fi
			names+=("$n")
		done
	fi
	export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BLKSNAP_CACHE/cargo-target}
	if [ "$arch" = x86_64 ]; then
		cargo build -q --locked --manifest-path "$REPO/rust-blksnap/Cargo.toml" --bin blksnap ||
			die "cannot build the blksnap tool"
		export BLKSNAP_BIN=$CARGO_TARGET_DIR/debug/blksnap
	else
		# shellcheck source=ppc-guest.sh
		. "$REPO/ci/ppc-guest.sh"
		build_ppc_tools
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
		f_all=$factor
		[ -z "${BLKSNAP_FLAVOUR:-}" ] || f_all=$((factor * 3))
		for i in "${!opts[@]}"; do
			[ "${opts[$i]}" != --timeout ] || opts[i + 1]=$((opts[i + 1] * f_all))
		done
		logf=$BLKSNAP_CACHE/results/vm-$arch$FLAVOUR_SUFFIX/$n.log
		mkdir -p "$(dirname "$logf")"
		rc=0 t0=$(date +%s)
		VM_QUIET=1 bash "$REPO/vm/run.sh" --arch "$arch" "${opts[@]}" --log "$logf" "$f" || rc=$?
		secs=$(($(date +%s) - t0))
		if [ "$rc" -eq 0 ]; then
			record "$n" "PASS (${secs}s)"
		else
			record "$n" "FAIL (status $rc after ${secs}s, log $logf)"
			echo "--- last lines of $logf:" >&2
			tail -n 40 "$logf" >&2
		fi
	done
fi

echo
echo "VM tests ($what):"
printf '  %s\n' "${results[@]}"
if [ ${#exceptions[@]} -gt 0 ]; then
	echo "Not run on $what (vm-arch):"
	printf '  %s\n' "${exceptions[@]}"
fi
echo "vm-tests: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
