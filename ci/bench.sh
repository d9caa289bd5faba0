#!/usr/bin/env bash
# Benchmarks that boot the built x86_64 kernel and compare against the raw
# device in the same run:
#   cbt       vm/bench/cbt-fio.sh: change tracking on the write path (fio 4k
#             random writes on null_blk, with and without blksnap attached,
#             and the cost of the static key);
#   snapshot  vm/bench/snapshot-fio.sh: a held snapshot on the write path
#             (first writes, overwrites of preserved chunks, CBT only);
#   suite     vm/bench/suite.sh: blksnap (CBT only, snapshots with the
#             storage on tmpfs and on ext4) beside dm-snapshot, dm-thin and
#             dm-era, the take stall, the take time, the memory of tracking;
#             JSON, a Markdown table and a plot under
#             $BLKSNAP_CACHE/results/bench/suite-DATE/ (latest: suite-latest),
#             and the table and the plot copied into docs/performance.md and
#             docs/performance.svg;
#   smoke     the suite once over small devices (one pair of each): asserts
#             that every configuration ran and gave numbers; docs untouched;
#   backup    vm/bench/backup-fio.sh: a full backup by the tool against fio
#             reading the same snapshot image, and a 1 % incremental.
#
# usage: ci/bench.sh [cbt|snapshot|suite|smoke|backup] [ARGS...]  default: cbt
#   ci/bench.sh cbt [REPS] [RUNTIME_SEC]            defaults: 7 pairs of 3 s runs
#   ci/bench.sh snapshot [REPS] [SIZE_MIB]          defaults: 3 pairs, 256 MiB
#   ci/bench.sh suite [--pristine[=BOOTS]] [REPS] [SIZE_MIB]
#                                                   defaults: 5 pairs, 256 MiB
#   ci/bench.sh smoke
#   ci/bench.sh backup [REPS] [SIZE_MIB]            defaults: 3 pairs, 1024 MiB
# --pristine (opt-in, long: it builds a second kernel): the cost for devices
# without a filter of having blkfilter compiled in. The pristine base (the
# "base" tag of the assembled tree) is built with the fork's x86_64 config
# (the fork's own options fall away in olddefconfig) in
# $BLKSNAP_CACHE/build-pristine-x86_64, under the build lock; then the fork
# and the pristine kernel are booted in turn, BOOTS pairs (default 3), each
# boot measuring the raw null_blk device (vm/bench/raw.sh), and the figure
# is the median of the per-pair ratios fork / pristine.
# The console log is kept in $BLKSNAP_CACHE/results/bench-<name>-fio.log
# (suite and smoke: in their results directory).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# matplotlib for the plot, in a virtual environment of its own, pinned.
MATPLOTLIB_VERSION=3.10.8
PLOT_VENV=$TOOLS/bench-venv

# plot_python: makes sure that the plotting environment is there (installs
# it the first time, or when the pin changed) and prints its python.
plot_python() {
	local py=$PLOT_VENV/bin/python
	if ! "$py" -c "import sys, matplotlib; sys.exit(matplotlib.__version__ != '$MATPLOTLIB_VERSION')" \
		2>/dev/null; then
		log "bench: installing matplotlib $MATPLOTLIB_VERSION in $PLOT_VENV"
		rm -rf "$PLOT_VENV"
		python3 -m venv "$PLOT_VENV" >&2 || die "cannot make a venv (python3-venv missing?)"
		"$PLOT_VENV/bin/pip" install -q --disable-pip-version-check \
			"matplotlib==$MATPLOTLIB_VERSION" >&2 || die "cannot install matplotlib"
	fi
	echo "$py"
}

# pristine_kernel: builds the pristine base with the fork's config (once,
# incrementally after); prints its build directory.
pristine_kernel() {
	local src=$BLKSNAP_CACHE/linux-pristine base cfg
	local bdir=$BLKSNAP_CACHE/build-pristine-x86_64
	base=$(git -C "$KSRC" rev-parse "base^{commit}") || die "no assembled tree in $KSRC: run ci/build.sh x86_64"
	[ -f "$(build_dir x86_64)/.config" ] || die "no fork config: run ci/build.sh x86_64"
	if [ "$(cat "$src/.pristine-base" 2>/dev/null)" != "$base" ]; then
		log "bench: unpacking the pristine base ($base) into $src"
		rm -rf "$src"
		mkdir -p "$src"
		git -C "$KSRC" archive base | tar -x -C "$src"
		echo "$base" >"$src/.pristine-base"
	fi
	mkdir -p "$bdir"
	cfg=$(mktemp)
	cp "$(build_dir x86_64)/.config" "$cfg"
	"$src/scripts/config" --file "$cfg" --set-str LOCALVERSION "-pristine"
	cmp -s "$cfg" "$bdir/.config.fork" || {
		cp "$cfg" "$bdir/.config"
		cp "$cfg" "$bdir/.config.fork"
	}
	rm -f "$cfg"
	(
		export KSRC=$src BLKSNAP_BUILD=$BLKSNAP_CACHE/build-pristine
		kmake x86_64 olddefconfig >/dev/null
		kmake x86_64 bzImage
	) >&2 || die "the pristine kernel did not build"
	echo "$bdir"
}

# pristine_boots BOOTS OUT: boots the fork and the pristine kernel in turn
# (ABAB), BOOTS pairs, each running vm/bench/raw.sh; appends the pairs to
# OUT/records.jsonl.
pristine_boots() {
	local boots=$1 out=$2 pdir i k order kopt
	pdir=$(pristine_kernel)
	mkdir -p "$out/pristine"
	for i in $(seq "$boots"); do
		order="fork pristine"
		[ $((i % 2)) -eq 1 ] || order="pristine fork"
		for k in $order; do
			kopt=()
			[ "$k" = fork ] || kopt=(--kernel "$pdir")
			VM_QUIET=1 bash "$REPO/vm/run.sh" --timeout 900 --out "$out/pristine" \
				--log "$out/pristine/$k-$i.log" "${kopt[@]}" "$REPO/vm/bench/raw.sh" "$k-$i"
		done
	done
	python3 "$REPO/vm/bench/report.py" pristine "$out/pristine/raw.jsonl" "$out/records.jsonl"
}

name=cbt
case ${1:-} in
cbt | snapshot | suite | smoke | backup) name=$1 && shift ;;
esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BLKSNAP_CACHE/cargo-target}
# The backup benchmark measures the tool itself: its release build.
profile=debug
[ "$name" != backup ] || profile=release
cargo build -q --locked --manifest-path "$REPO/rust-blksnap/Cargo.toml" --bin blksnap \
	$([ "$profile" = debug ] || echo --release) || die "cannot build the blksnap tool"
export BLKSNAP_BIN=$CARGO_TARGET_DIR/$profile/blksnap
mkdir -p "$BLKSNAP_CACHE/results"

case $name in
cbt | snapshot)
	exec bash "$REPO/vm/run.sh" --timeout 1800 --log "$BLKSNAP_CACHE/results/bench-$name-fio.log" \
		"$REPO/vm/bench/$name-fio.sh" "$@"
	;;
backup)
	exec bash "$REPO/vm/run.sh" --timeout 1800 --memory 4G \
		--log "$BLKSNAP_CACHE/results/bench-$name-fio.log" "$REPO/vm/bench/$name-fio.sh" "$@"
	;;
suite)
	pristine=0
	case ${1:-} in
	--pristine) pristine=3 && shift ;;
	--pristine=*) pristine=${1#--pristine=} && shift ;;
	esac
	args=("${1:-5}" "${2:-256}" full) timeout=3000 memory=4G
	;;
smoke) args=(1 32 smoke) timeout=900 memory=2G ;;
esac

py=$(plot_python)
out=$BLKSNAP_CACHE/results/bench/$name-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
load0=$(cut -d' ' -f1 /proc/loadavg)
t0=$(date +%s)
bash "$REPO/vm/run.sh" --timeout "$timeout" --memory "$memory" --out "$out" --log "$out/console.log" \
	"$REPO/vm/bench/suite.sh" "${args[@]}"
if [ "$name" = suite ] && [ "$pristine" -gt 0 ]; then
	pristine_boots "$pristine" "$out"
fi
# The host's side of the facts: how the guest ran, and how busy the host
# was (a kernel build beside the benchmark makes its numbers noise).
"$py" "$REPO/vm/bench/report.py" summarize "$out/records.jsonl" "$out/suite.json" \
	"accel=$(bash "$REPO/vm/accel.sh")" "host_load=$load0 at the start, $(cut -d' ' -f1 /proc/loadavg) at the end" \
	"date=$(date -u +%Y-%m-%d)" "duration_s=$(($(date +%s) - t0))" >/dev/null
"$py" "$REPO/vm/bench/report.py" check "$out/suite.json"
if [ "$name" = suite ]; then
	"$py" "$REPO/vm/bench/report.py" render "$out/suite.json" "$out" \
		--doc "$REPO/docs/performance.md" --svg "$REPO/docs/performance.svg"
else
	"$py" "$REPO/vm/bench/report.py" render "$out/suite.json" "$out"
fi
ln -sfn "$(basename "$out")" "$BLKSNAP_CACHE/results/bench/$name-latest"
cat "$out/table.md"
log "bench: $name: results in $out (suite.json, table.md, ratios.svg, console.log)"
