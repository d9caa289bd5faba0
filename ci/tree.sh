#!/usr/bin/env bash
# Assemble the fork's kernel tree ($KSRC): pinned base + linux/series.toml.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kbuild_lock "$@"
bash "$REPO/ci/bootstrap.sh" fetch-base
exec python3 "$REPO/linux/assemble.py" --tree "$KSRC" --tarball "$TOOLS/linux-source.tar.xz" "$@"
