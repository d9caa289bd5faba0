#!/usr/bin/env bash
# Install everything the fork's build and tests need. Idempotent: a second
# run checks versions and installs nothing. Stops with a message that names
# what is missing or mismatched.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# shellcheck source=ppc-guest.sh
. "$(dirname "$0")/ppc-guest.sh"

DEB_PKGS=(
	build-essential flex bison bc libelf-dev libssl-dev dwarves cpio kmod
	zstd xz-utils ccache python3-venv
	clang-19 lld-19 llvm-19 libclang-19-dev
	qemu-system-x86 qemu-system-ppc
	fio udev fdisk xfsprogs dmsetup
	# ppc64le guests: the cross linker of the blksnap tool and the v6 client
	gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross
	# xfstests: to build it, then what its tests run in the guest (gawk:
	# mawk lacks strtonum, which ext4/023 and ext4/028 use)
	autoconf automake libtool pkg-config xfslibs-dev uuid-dev libattr1-dev
	libacl1-dev libaio-dev liburing-dev libgdbm-dev libcap-dev libinih-dev
	e2fsprogs attr acl quota dbench psmisc gawk
)

mkdir -p "$TOOLS"

# Private apt configuration for fetching single packages of another suite
# without touching the system's apt state. Reuses the system's mirror.
PRIV_APT=$TOOLS/apt
priv_apt() {
	local suite=$1 arch=${2:-}
	local dir=$PRIV_APT/$suite${arch:+-$arch}
	local uri
	uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null ||
		true)
	[ -n "$uri" ] || uri=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
	[ -n "$uri" ] || die "cannot find the Debian mirror in the system's apt sources"
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" \
		>"$dir/sources.list"
	PRIV_APT_OPTS=(-o "Dir::State::Lists=$dir/lists" -o "Dir::Etc::SourceList=$dir/sources.list"
		-o "Dir::Etc::SourceParts=/dev/null" -o "Dir::Cache=$dir/cache"
		-o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Sandbox::User=root")
	[ -n "$arch" ] && PRIV_APT_OPTS+=(-o "APT::Architecture=$arch" -o "APT::Architectures=$arch")
	if [ ! -f "$dir/.updated" ] || [ -n "$(find "$dir/.updated" -mmin +720)" ]; then
		apt-get "${PRIV_APT_OPTS[@]}" update -qq >&2 || die "apt update of $suite failed"
		touch "$dir/.updated"
	fi
}

# fetch_deb SUITE PKG VERSION SHA256 DEST [ARCH]: download one .deb, verify it.
fetch_deb() {
	local suite=$1 pkg=$2 ver=$3 sum=$4 dest=$5 arch=${6:-}
	local f
	if [ -f "$dest" ] && echo "$sum  $dest" | sha256sum -c --status; then
		return 0
	fi
	priv_apt "$suite" "$arch"
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get "${PRIV_APT_OPTS[@]}" download -qq "$pkg${ver:+=$ver}" >&2) ||
		die "cannot download $pkg $ver from $suite (if it left the suite, update linux/base.env)"
	f=$(ls "$tmp"/*.deb)
	if [ -n "$sum" ] && ! echo "$sum  $f" | sha256sum -c --status; then
		die "checksum mismatch for $f (expected $sum)"
	fi
	mv "$f" "$dest"
	rm -rf "$tmp"
}

install_debs() {
	local missing=()
	for p in "${DEB_PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing Debian packages: ${missing[*]}"
		[ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"${missing[@]}" >/dev/null
	fi
}

install_rust_src() {
	local v
	v=$(rustc --version 2>/dev/null | awk '{print $2}')
	[ "$v" = "$RUSTC_VERSION" ] ||
		die "rustc is '${v:-missing}', the pinned rust-src needs $RUSTC_VERSION"
	if [ ! -d "$RUST_LIB_SRC/core" ]; then
		log "fetching Debian rust-src $RUST_SRC_VERSION"
		fetch_deb "$BASE_SUITE" rust-src "$RUST_SRC_VERSION" "$RUST_SRC_DEB_SHA256" \
			"$TOOLS/rust-src.deb"
		rm -rf "$TOOLS/rust-src"
		dpkg -x "$TOOLS/rust-src.deb" "$TOOLS/rust-src"
	fi
	[ -d "$RUST_LIB_SRC/core" ] || die "rust-src has no library/core at $RUST_LIB_SRC"
}

install_bindgen() {
	if ! bindgen --version 2>/dev/null | grep -q "bindgen $BINDGEN_VERSION"; then
		log "installing bindgen-cli $BINDGEN_VERSION"
		cargo install -q bindgen-cli --locked --version "$BINDGEN_VERSION"
	fi
}

install_vng() {
	if [ ! -x "$TOOLS/venv/bin/vng" ] ||
		[ "$("$TOOLS/venv/bin/pip" show virtme-ng 2>/dev/null | sed -n 's/^Version: //p')" != \
			"$VIRTME_NG_VERSION" ]; then
		log "installing virtme-ng $VIRTME_NG_VERSION"
		python3 -m venv "$TOOLS/venv"
		"$TOOLS/venv/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION"
	fi
	# checkpatch.pl runs scripts/spdxcheck.py, which needs ply and GitPython
	# (ci/series.sh puts this venv first on PATH).
	if ! "$TOOLS/venv/bin/python3" -c 'import ply, git' 2>/dev/null; then
		log "installing ply and GitPython (for checkpatch's SPDX check)"
		"$TOOLS/venv/bin/pip" install -q ply GitPython
	fi
}

# Fetch the pinned base: the .deb, then the tarball inside, both verified.
fetch_base() {
	local tarball=$TOOLS/linux-source.tar.xz
	if [ -f "$tarball" ] && echo "$BASE_TARBALL_SHA256  $tarball" | sha256sum -c --status; then
		return 0
	fi
	fetch_deb "$BASE_SUITE" "$BASE_PKG" "$BASE_VERSION" "$BASE_DEB_SHA256" "$TOOLS/base.deb"
	local tmp
	tmp=$(mktemp -d)
	dpkg-deb --fsys-tarfile "$TOOLS/base.deb" | tar -x -C "$tmp" "./$BASE_TARBALL"
	echo "$BASE_TARBALL_SHA256  $tmp/$BASE_TARBALL" | sha256sum -c --status ||
		die "checksum mismatch for the tarball inside $BASE_PKG"
	mv "$tmp/$BASE_TARBALL" "$tarball"
	rm -rf "$tmp"
}

# Guest user space for ppc64le: the host's x86 binaries cannot run there,
# so the guest boots on a root file system of Debian ppc64el packages
# (install_ppc_rootfs, ci/ppc-guest.sh).

# xfstests from the shared third-party directory (no registry carries it):
# verified against the pinned checksum, unpacked and built under the cache
# once; a stamp names the tarball it was built from.
third_party_dir() {
	local d
	for d in "${BLKSNAP_THIRD_PARTY:-}" "$REPO/../shared/third-party" /work/shared/third-party; do
		[ -n "$d" ] && [ -f "$d/$XFSTESTS_TARBALL" ] && echo "$d" && return 0
	done
	return 1
}
install_xfstests() {
	local dir=$TOOLS/xfstests stamp=$TOOLS/xfstests/.built-from
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$XFSTESTS_SHA256" ] && [ -x "$dir/check" ]; then
		return 0
	fi
	local src
	src=$(third_party_dir) ||
		die "no $XFSTESTS_TARBALL: set BLKSNAP_THIRD_PARTY to the directory that holds it" \
			"(the project keeps it in ../shared/third-party)"
	echo "$XFSTESTS_SHA256  $src/$XFSTESTS_TARBALL" | sha256sum -c --status ||
		die "checksum mismatch for $src/$XFSTESTS_TARBALL (expected $XFSTESTS_SHA256)"
	log "building xfstests from $XFSTESTS_TARBALL"
	rm -rf "$dir"
	mkdir -p "$dir"
	tar -xJf "$src/$XFSTESTS_TARBALL" -C "$dir" --strip-components=1
	make -C "$dir" -j"$JOBS" >"$TOOLS/xfstests-build.log" 2>&1 ||
		die "xfstests build failed (log: $TOOLS/xfstests-build.log)"
	echo "$XFSTESTS_SHA256" >"$stamp"
}

check_versions() {
	local bad=()
	clang-19 --version | grep -q 'version 19' || bad+=("clang-19")
	ld.lld-19 --version >/dev/null 2>&1 || bad+=("lld-19")
	bindgen --version | grep -q "bindgen $BINDGEN_VERSION" || bad+=("bindgen $BINDGEN_VERSION")
	[ "$(rustc --version | awk '{print $2}')" = "$RUSTC_VERSION" ] || bad+=("rustc $RUSTC_VERSION")
	[ -d "$RUST_LIB_SRC/core" ] || bad+=("rust-src at $RUST_LIB_SRC")
	command -v ccache >/dev/null || bad+=(ccache)
	command -v qemu-system-x86_64 >/dev/null || bad+=(qemu-system-x86_64)
	command -v qemu-system-ppc64 >/dev/null || bad+=(qemu-system-ppc64)
	command -v vng >/dev/null || bad+=(virtme-ng)
	command -v powerpc64le-linux-gnu-gcc >/dev/null || bad+=(gcc-powerpc64le-linux-gnu)
	[ -f "$PPC_ROOT/.stamp" ] || bad+=("ppc64le root file system at $PPC_ROOT")
	[ -f "$BUILDSTD_SYSROOT/.stamp" ] || bad+=("-Zbuild-std sysroot at $BUILDSTD_SYSROOT")
	[ -x "$TOOLS/xfstests/check" ] || bad+=("xfstests at $TOOLS/xfstests")
	[ ${#bad[@]} -eq 0 ] || die "toolchain incomplete or mismatched: ${bad[*]}"
}

case ${1:-all} in
all)
	install_debs
	install_rust_src
	install_bindgen
	install_vng
	install_ppc_rootfs
	install_buildstd_sysroot
	install_xfstests
	fetch_base
	check_versions
	;;
check) check_versions ;;
fetch-base) fetch_base ;;
relock-ppc-rootfs) relock_ppc_rootfs ;;
*) die "usage: $0 [all|check|fetch-base|relock-ppc-rootfs]" ;;
esac
log "toolchain ready"
