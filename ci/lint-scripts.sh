#!/usr/bin/env bash
# Syntax check of the repository's shell scripts (bash -n; busybox-sh
# guest scripts with sh -n).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bad=0
while IFS= read -r f; do
	[ -f "$f" ] || continue # removed, not committed yet
	case $(head -1 "$f") in
	*"/bin/sh"*) sh -n "$f" || bad=1 ;;
	*) bash -n "$f" || bad=1 ;;
	esac
done < <(git -C "$REPO" ls-files '*.sh' .ci/run; find "$REPO/ci" "$REPO/vm" -name '*.sh')
[ $bad -eq 0 ] || die "shell syntax errors"
log "shell scripts: syntax ok"
