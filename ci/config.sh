#!/usr/bin/env bash
# Make the kernel config of an architecture: tinyconfig + the fragments of
# configs/, merged with scripts/kconfig/merge_config.sh. merge_config only
# warns when an option cannot be set (a missing dependency), so every option
# asked for is checked afterwards and the first one that did not stick fails
# the run, named.
#
# usage: ci/config.sh ARCH [EXTRA_FRAGMENT...]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kbuild_lock "$@"

arch=${1:?usage: $0 x86_64|ppc64le [fragment...]}
shift
case $arch in
x86_64) frags=(common vng x86_64) ;;
ppc64le) frags=(common vng ppc64le) ;;
*) die "unknown architecture '$arch'" ;;
esac
[ -z "${BLKSNAP_FLAVOUR:-}" ] || frags+=("$BLKSNAP_FLAVOUR")
files=()
for f in "${frags[@]}"; do
	[ -f "$REPO/configs/$f.config" ] || die "no config fragment configs/$f.config"
	files+=("$REPO/configs/$f.config")
done
for f in "$@"; do files+=("$(realpath "$f")"); done

out=$(build_dir "$arch")
mkdir -p "$out"
stamp=$out/.fork-config-inputs
inputs=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)
if [ -f "$out/.config" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$inputs" ]; then
	log "config of $arch unchanged"
	exit 0
fi

kmake "$arch" tinyconfig >/dev/null
# merge_config.sh runs in the build directory; -O keeps the result there.
(cd "$out" && KCONFIG_CONFIG=.config "$KSRC/scripts/kconfig/merge_config.sh" -m -O "$out" \
	.config "${files[@]}" >/dev/null)
kmake "$arch" olddefconfig >/dev/null

# Verify: every "CONFIG_X=v" and "# CONFIG_X is not set" line of the
# fragments must hold in the final .config; where fragments disagree, the
# later one wins, as in the merge.
declare -A want=()
order=()
while IFS= read -r line; do
	if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
		opt=${BASH_REMATCH[1]} val=${BASH_REMATCH[2]}
	elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set ]]; then
		opt=${BASH_REMATCH[1]} val=""
	else
		continue
	fi
	[ -n "${want[$opt]+set}" ] || order+=("$opt")
	want[$opt]=$val
done < <(cat "${files[@]}")
bad=0
for opt in "${order[@]}"; do
	got=$(grep -E "^$opt=" "$out/.config" | head -1 | cut -d= -f2- || true)
	if [ -z "${want[$opt]}" ] && [ -n "$got" ]; then
		echo "config: $opt: asked to be unset, got $opt=$got" >&2
		bad=1
	elif [ "$got" != "${want[$opt]}" ]; then
		echo "config: $opt: asked for ${want[$opt]}, got ${got:-unset} (a dependency is missing?)" >&2
		bad=1
	fi
done
[ $bad -eq 0 ] || die "config of $arch does not hold what configs/ asks for"
echo "$inputs" >"$stamp"
log "config of $arch: $(grep -c '=y' "$out/.config") options built in"
