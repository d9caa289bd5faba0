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

# kernel-doc, which a W=1 build runs on .c files: no file the series adds or
# changes may warn more than its base version does.
kdoc_warnings() { (cd "$KSRC" && perl scripts/kernel-doc -none -Wall "$1" 2>&1 | grep -ci warning || true); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
while IFS= read -r f; do
	git -C "$KSRC" show "fork:$f" >"$tmp/fork.${f##*.}"
	now=$(kdoc_warnings "$tmp/fork.${f##*.}")
	was=0
	if git -C "$KSRC" show "base:$f" >"$tmp/base.${f##*.}" 2>/dev/null; then
		was=$(kdoc_warnings "$tmp/base.${f##*.}")
	fi
	if [ "$now" -gt "$was" ]; then
		echo "kernel-doc: $f: $now warnings, $was in the base:" >&2
		(cd "$KSRC" && perl scripts/kernel-doc -none -Wall "$tmp/fork.${f##*.}") >&2 || true
		bad=1
	fi
done < <(git -C "$KSRC" diff --name-only base..fork -- '*.c' '*.h')
[ $bad -eq 0 ] || die "kernel-doc warns on the series"
log "series: $n patches in $out, checkpatch --strict and kernel-doc clean"
