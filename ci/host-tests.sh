#!/usr/bin/env bash
# Host tests of the user-space side: format, lints and tests of the Rust
# workspace in rust-blksnap/ (including the ABI check of the C UAPI headers,
# which needs a C compiler and linux-libc-dev). Runs from any directory.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/blksnap-fork/cargo-target}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-$JOBS}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

command -v cargo >/dev/null || die "cargo not found (PATH=$PATH)"
command -v "${CC:-cc}" >/dev/null || die "no C compiler for the UAPI header check"

cd "$REPO/rust-blksnap"

log "cargo fmt --check"
cargo fmt --all --check || die "code is not formatted (run: cargo fmt in rust-blksnap/)"

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings || die "clippy found problems"

log "cargo test"
cargo test --locked --workspace || die "tests failed"

log "host tests passed"
