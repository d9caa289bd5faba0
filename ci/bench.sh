#!/usr/bin/env bash
# Benchmark of change tracking on the write path: boots the built x86_64
# kernel and runs vm/bench/cbt-fio.sh (fio 4k random writes on null_blk,
# with and without blksnap attached, and the cost of the static key).
#
# usage: ci/bench.sh [REPS] [RUNTIME_SEC]        defaults: 7 pairs of 3 s runs
# The console log is kept in $BLKSNAP_CACHE/results/bench-cbt-fio.log.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BLKSNAP_CACHE/cargo-target}
cargo build -q --locked --manifest-path "$REPO/rust-blksnap/Cargo.toml" --bin blksnap ||
	die "cannot build the blksnap tool"
export BLKSNAP_BIN=$CARGO_TARGET_DIR/debug/blksnap
mkdir -p "$BLKSNAP_CACHE/results"
bash "$REPO/vm/run.sh" --timeout 1800 --log "$BLKSNAP_CACHE/results/bench-cbt-fio.log" \
	"$REPO/vm/bench/cbt-fio.sh" "$@"
