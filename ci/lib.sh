# shellcheck shell=bash
# Common settings for the fork's scripts. Source it; do not run it.
#
# Everything large (the unpacked base, build directories, toolchain pieces,
# ccache) lives under $BLKSNAP_CACHE, outside the repository, so it survives
# between sessions and CI runs on the same machine.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BLKSNAP_CACHE=${BLKSNAP_CACHE:-$HOME/.cache/blksnap-fork}
# shellcheck source=../linux/base.env
. "$REPO/linux/base.env"

KSRC=${KSRC:-$BLKSNAP_CACHE/linux}
TOOLS=$BLKSNAP_CACHE/tools
RUST_LIB_SRC=${RUST_LIB_SRC:-$TOOLS/rust-src/usr/src/rustc-$RUSTC_VERSION/library}
export RUST_LIB_SRC
export CCACHE_DIR=${CCACHE_DIR:-$BLKSNAP_CACHE/ccache}
# ccache for C: a masquerade directory makes every clang-19 call (kernel
# and host programs) go through ccache; rustc's link steps pass through.
CCACHE_BIN=$TOOLS/ccache-bin
if [ ! -e "$CCACHE_BIN/clang-19" ] && command -v ccache >/dev/null; then
	mkdir -p "$CCACHE_BIN"
	ln -sf "$(command -v ccache)" "$CCACHE_BIN/clang-19"
fi
export PATH="$CCACHE_BIN:$HOME/.cargo/bin:$TOOLS/venv/bin:$PATH"
JOBS=${JOBS:-$(($(nproc) + 1))}

# A flavour of the kernel (BLKSNAP_FLAVOUR=debug: configs/debug.config on
# top of the usual fragments) has build and result directories of its own.
FLAVOUR_SUFFIX=${BLKSNAP_FLAVOUR:+-$BLKSNAP_FLAVOUR}

# Build directory of an architecture (x86_64 or ppc64le).
build_dir() { echo "${BLKSNAP_BUILD:-$BLKSNAP_CACHE/build}-$1$FLAVOUR_SUFFIX"; }

# make arguments of an architecture.
kmake_args() {
	local arch=$1
	# LOCALVERSION is set (empty) so that the tree being a git checkout
	# adds no "+" to the release; the fork's name is CONFIG_LOCALVERSION.
	# Rust is built through clippy, and any Rust warning (clippy's lints
	# included) fails the build, so that no warning can hide in an
	# incremental build that does not recompile the file.
	local args=(LLVM=-19 LOCALVERSION= -j"$JOBS" CLIPPY=1 KRUSTFLAGS=-Dwarnings)
	case $arch in
	x86_64) args+=(ARCH=x86_64) ;;
	ppc64le) args+=(ARCH=powerpc) ;;
	*) die "unknown architecture '$arch'" ;;
	esac
	printf '%s\n' "${args[@]}"
}

kmake() {
	local arch=$1
	shift
	local args
	mapfile -t args < <(kmake_args "$arch")
	if [ -n "${BLKSNAP_KBUILD_LOCKED:-}" ]; then
		make -C "$KSRC" O="$(build_dir "$arch")" "${args[@]}" "$@"
	else
		mkdir -p "$BLKSNAP_CACHE"
		BLKSNAP_KBUILD_LOCKED=1 flock "$BLKSNAP_CACHE/kbuild.lock" \
			make -C "$KSRC" O="$(build_dir "$arch")" "${args[@]}" "$@"
	fi
}

# One kernel build (or tree update) at a time on this machine: concurrent
# builds on two cores are slower than consecutive ones, and a tree update
# under a running build breaks it. A script that changes the tree or a
# build directory calls `kbuild_lock "$@"` first: it re-runs itself under
# the lock (waiting for it), and what it runs inherits the lock.
kbuild_lock() {
	if [ -z "${BLKSNAP_KBUILD_LOCKED:-}" ]; then
		mkdir -p "$BLKSNAP_CACHE"
		export BLKSNAP_KBUILD_LOCKED=1
		exec flock "$BLKSNAP_CACHE/kbuild.lock" bash "$0" "$@"
	fi
}

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# Stage timing: `stage NAME cmd...` runs cmd and records its duration.
STAGE_FILE=${STAGE_FILE:-}
stage() {
	local name=$1 t0 rc
	shift
	t0=$(date +%s)
	log "stage: $name"
	"$@"
	rc=$?
	if [ -n "$STAGE_FILE" ]; then
		printf '%s\t%s\t%s\n' "$name" "$(($(date +%s) - t0))" \
			"$([ $rc -eq 0 ] && echo ok || echo "FAILED($rc)")" >>"$STAGE_FILE"
	fi
	return $rc
}

print_stages() {
	[ -n "$STAGE_FILE" ] && [ -s "$STAGE_FILE" ] || return 0
	local total=0
	printf '\n%-32s %8s  %s\n' "stage" "seconds" "result"
	printf '%-32s %8s  %s\n' "--------------------------------" "-------" "------"
	while IFS=$'\t' read -r n s r; do
		printf '%-32s %8s  %s\n' "$n" "$s" "$r"
		total=$((total + s))
	done <"$STAGE_FILE"
	printf '%-32s %8s\n' "sum of stages" "$total"
	# Stages of different architectures overlap (ci/test.sh).
	[ -z "${STAGES_T0:-}" ] ||
		printf '%-32s %8s\n' "wall clock" "$(($(date +%s) - STAGES_T0))"
}

# Start a table of stage timings in $BLKSNAP_CACHE/results/NAME.tsv, printed
# however the script ends.
stages_begin() {
	mkdir -p "$BLKSNAP_CACHE/results"
	STAGE_FILE=$BLKSNAP_CACHE/results/$1.tsv
	STAGES_T0=$(date +%s)
	export STAGE_FILE
	: >"$STAGE_FILE"
	trap print_stages EXIT
}

# Print the table and a summary line; fails if any stage failed.
stages_end() {
	local failed passed
	trap - EXIT
	print_stages
	failed=$(awk -F'\t' '$3 != "ok"' "$STAGE_FILE" | wc -l)
	passed=$(awk -F'\t' '$3 == "ok"' "$STAGE_FILE" | wc -l)
	echo "stages: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}
