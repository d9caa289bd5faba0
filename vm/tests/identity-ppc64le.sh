#!/bin/sh
# vm: --timeout 300
# vm-arch: ppc64le (checks the 64 KiB pages of the ppc64le build)
# The ppc64le guest runs the fork, with Rust and 64 KiB pages.
fail() {
	echo "FAIL: $*"
	exit 1
}
rel=$(uname -r)
echo "release: $rel machine: $(uname -m)"
case $rel in *-blksnap) ;; *) fail "release '$rel' does not name the fork" ;; esac
[ "$(uname -m)" = ppc64le ] || fail "machine is $(uname -m), not ppc64le"
zcat /proc/config.gz | grep -qx 'CONFIG_RUST=y' || fail "kernel has no CONFIG_RUST=y"
zcat /proc/config.gz | grep -qx 'CONFIG_PPC_64K_PAGES=y' || fail "no CONFIG_PPC_64K_PAGES"
# The page size the kernel gives user space: AT_PAGESZ (6) in the aux vector.
pagesz=$(od -An -v -t u8 /proc/self/auxv | tr -s ' ' '\n' | grep -v '^$' |
	awk 'NR % 2 == 1 { key = $1 } NR % 2 == 0 && key == 6 { print $1; exit }')
echo "page size: $pagesz"
[ "$pagesz" = 65536 ] || fail "page size is '$pagesz', not 65536"
echo "PASS: identity-ppc64le"
