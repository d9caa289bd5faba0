#!/usr/bin/env bash
# The main job: install what is needed, build the fork (x86_64), boot it
# and run the end-to-end demo (vm/demo.sh) in the guest.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

stages_begin demo-stages

stage bootstrap bash "$REPO/ci/bootstrap.sh" || exit 1
stage build:x86_64 bash "$REPO/ci/build.sh" x86_64 || exit 1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BLKSNAP_CACHE/cargo-target}
stage build:tool cargo build -q --locked --manifest-path "$REPO/rust-blksnap/Cargo.toml" --bin blksnap || exit 1
export BLKSNAP_BIN=$CARGO_TARGET_DIR/debug/blksnap
# The demo shows the KUnit summary of its boot: KUnit runs there.
stage demo bash "$REPO/vm/run.sh" --timeout 600 --disk 256M --append kunit.enable=1 "$REPO/vm/demo.sh"
