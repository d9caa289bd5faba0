#!/usr/bin/env bash
# Benchmarks that boot the built x86_64 kernel and compare against the raw
# device in the same run:
#   cbt       vm/bench/cbt-fio.sh: change tracking on the write path (fio 4k
#             random writes on null_blk, with and without blksnap attached,
#             and the cost of the static key);
#   snapshot  vm/bench/snapshot-fio.sh: a held snapshot on the write path
#             (first writes, overwrites of preserved chunks, CBT only).
#
# usage: ci/bench.sh [cbt|snapshot] [ARGS...]      default: cbt
#   ci/bench.sh cbt [REPS] [RUNTIME_SEC]            defaults: 7 pairs of 3 s runs
#   ci/bench.sh snapshot [REPS] [SIZE_MIB]          defaults: 3 pairs, 256 MiB
# The console log is kept in $BLKSNAP_CACHE/results/bench-<name>-fio.log.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

name=cbt
case ${1:-} in
cbt | snapshot) name=$1 && shift ;;
esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BLKSNAP_CACHE/cargo-target}
cargo build -q --locked --manifest-path "$REPO/rust-blksnap/Cargo.toml" --bin blksnap ||
	die "cannot build the blksnap tool"
export BLKSNAP_BIN=$CARGO_TARGET_DIR/debug/blksnap
mkdir -p "$BLKSNAP_CACHE/results"
bash "$REPO/vm/run.sh" --timeout 1800 --log "$BLKSNAP_CACHE/results/bench-$name-fio.log" \
	"$REPO/vm/bench/$name-fio.sh" "$@"
