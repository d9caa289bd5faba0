#!/usr/bin/env bash
# Generate the fork's patch series from the assembled tree
# (git format-patch base..fork) and check it with checkpatch.pl --strict.
# Any error, warning or check fails the run.
#
# usage: ci/series.sh [OUTDIR]   (default: $BLKSNAP_CACHE/series)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

out=${1:-$BLKSNAP_CACHE/series}
bash "$REPO/ci/tree.sh" >/dev/null
rm -rf "$out"
mkdir -p "$out"
git -C "$KSRC" format-patch -q --cover-letter -o "$out" base..fork
n=$(find "$out" -name '0*.patch' ! -name '0000-*' | wc -l)
bad=0
for p in "$out"/0*.patch; do
	case $(basename "$p") in 0000-cover-letter.patch) continue ;; esac
	if ! (cd "$KSRC" && PATH="$TOOLS/venv/bin:$PATH" perl scripts/checkpatch.pl --strict --quiet "$p") \
		>"$p.checkpatch" 2>&1; then
		echo "checkpatch: $(basename "$p"):" >&2
		cat "$p.checkpatch" >&2
		bad=1
	fi
done
[ $bad -eq 0 ] || die "checkpatch --strict is not clean on the series ($out)"
log "series: $n patches in $out, checkpatch --strict clean"
