#!/usr/bin/env bash
# Build the fork for an architecture: assemble the tree, make the config,
# build the kernel image. Incremental: unchanged inputs rebuild nothing.
#
# usage: ci/build.sh x86_64|ppc64le
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kbuild_lock "$@"

arch=${1:?usage: $0 x86_64|ppc64le}
bash "$REPO/ci/tree.sh"
bash "$REPO/ci/config.sh" "$arch"
case $arch in
x86_64) target=bzImage ;;
ppc64le) target=vmlinux ;;
esac
log "building $arch ($target) in $(build_dir "$arch")"
kmake "$arch" "$target"
# Every Rust file of the tree (the fork's included) must be rustfmt-clean.
[ "$arch" != x86_64 ] || kmake "$arch" rustfmtcheck
log "built $(kmake "$arch" -s kernelrelease 2>/dev/null | tail -1)"
