#!/bin/bash
# Fetch the parts of the Linux kernel source that ioasid tests against: the uapi
# headers (include/uapi), the mock-driver test header
# (drivers/iommu/iommufd/iommufd_test.h), the iommufd and VFIO selftests with the
# kselftest harness (tools/testing/selftests) and what the VFIO selftests include
# from elsewhere in the tree (tools/include, tools/arch/*/include, the IOAT and
# DSA register headers, include/linux/pci_ids.h).
#
# The source comes from Debian's `linux-source-<version>` package (suite sid),
# fetched with apt as a separate, download-only source that has its own lists
# folder, so the machine's apt configuration is left alone. The archive address
# is read at run time from the machine's own Debian source entry.  Nothing of
# the kernel is ever written into the repository: everything goes to a cache
# folder.
#
# usage: scripts/fetch-linux-source.sh [--full] [--quiet]
#   Prints the path of the source tree (its root holds include/, drivers/,
#   tools/) as the last line on stdout; progress goes to stderr.
#   --full   extract the whole tree instead of the few folders the tests need
#
# environment:
#   IOASID_LINUX_SRC      use this already extracted tree (checked, never modified)
#   IOASID_CACHE          cache root (default ~/.cache/ioasid); the tree goes to
#                         $IOASID_CACHE/linux-source, the .deb to $IOASID_CACHE/deb
#   IOASID_LINUX_VERSION  wanted package version (default 7.2); if the archive
#                         does not have it, the newest linux-source-* is used
#   IOASID_LINUX_DEB      use this linux-source .deb instead of downloading one
#   IOASID_DEBIAN_MIRROR  archive URI to use when the machine has no Debian entry
set -euo pipefail

VERSION=${IOASID_LINUX_VERSION:-7.2}
REQUESTED=$VERSION
CACHE=${IOASID_CACHE:-$HOME/.cache/ioasid}
DEST=$CACHE/linux-source
DEB_DIR=$CACHE/deb
FULL=0
QUIET=0
for a in "$@"; do
	case $a in
	--full) FULL=1 ;;
	--quiet) QUIET=1 ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "fetch-linux-source: unknown argument: $a" >&2; exit 2 ;;
	esac
done
log() { [ "$QUIET" = 1 ] || echo "[fetch-linux-source] $*" >&2; }
die() { echo "[fetch-linux-source] error: $*" >&2; exit 1; }

# Files whose presence makes a tree usable.
REQUIRED=(
	include/uapi/linux/iommufd.h
	include/uapi/linux/vfio.h
	drivers/iommu/iommufd/iommufd_test.h
	tools/testing/selftests/kselftest_harness.h
	tools/testing/selftests/iommu/iommufd.c
	tools/testing/selftests/vfio/Makefile
	tools/testing/selftests/vfio/lib/libvfio.mk
	tools/include/linux/types.h
	drivers/dma/ioat/registers.h
)
tree_ok() {
	local f
	for f in "${REQUIRED[@]}"; do [ -f "$1/$f" ] || return 1; done
}

# --- 0. a tree given by the caller ----------------------------------------------
if [ -n "${IOASID_LINUX_SRC:-}" ]; then
	tree_ok "$IOASID_LINUX_SRC" ||
		die "IOASID_LINUX_SRC=$IOASID_LINUX_SRC lacks one of: ${REQUIRED[*]}"
	log "using IOASID_LINUX_SRC=$IOASID_LINUX_SRC"
	echo "$IOASID_LINUX_SRC"
	exit 0
fi

mkdir -p "$CACHE"
# One fetch at a time (swift test and the conformance script may both ask).
exec 9>"$CACHE/.fetch-linux-source.lock"
flock 9

STAMP=$DEST/.ioasid-source
want_full=$FULL
if [ -f "$STAMP" ] && tree_ok "$DEST" && grep -qx "requested=$VERSION" "$STAMP"; then
	have_full=$(sed -n 's/^full=//p' "$STAMP")
	if [ "$want_full" = 0 ] || [ "$have_full" = 1 ]; then
		log "using cached $(sed -n 's/^package=//p' "$STAMP") in $DEST"
		echo "$DEST"
		exit 0
	fi
fi

# --- 1. the .deb ---------------------------------------------------------------------
# debian_uri: the archive URI of the machine's own Debian entry.
. "$(dirname "${BASH_SOURCE[0]}")/debian-archive.sh"

find_deb() {	# newest already downloaded linux-source .deb of the wanted version
	local d
	for d in "$DEB_DIR"/linux-source-"$VERSION"_*_all.deb; do if [ -f "$d" ]; then echo "$d"; fi; done | sort -V | tail -n1
}

DEB=${IOASID_LINUX_DEB:-}
[ -z "$DEB" ] && DEB=$(find_deb)
if [ -z "$DEB" ]; then
	uri=${IOASID_DEBIAN_MIRROR:-}
	[ -z "$uri" ] && uri=$(debian_uri | head -n1)
	[ -n "$uri" ] || die "no Debian archive entry found in /etc/apt; set IOASID_DEBIAN_MIRROR to an archive URI"
	command -v apt-get >/dev/null || die "apt-get is needed to fetch linux-source-$VERSION"
	log "fetching linux-source-$VERSION (suite sid) from the machine's Debian archive"
	APT_DIR=$CACHE/apt
	mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$DEB_DIR"
	echo "deb $uri sid main" > "$APT_DIR/sid.list"
	APT_OPTS=(
		-o Dir::Etc::sourcelist="$APT_DIR/sid.list"
		-o Dir::Etc::sourceparts=-
		-o Dir::State::Lists="$APT_DIR/lists"
		-o Dir::Cache="$APT_DIR/cache"
		-o APT::Get::List-Cleanup=0
	)
	# apt drops to the _apt user for downloads, which cannot write into a home folder.
	[ "$(id -u)" = 0 ] && APT_OPTS+=(-o APT::Sandbox::User=root)
	apt-get -q update "${APT_OPTS[@]}" >&2 || die "apt-get update of the sid source failed"
	pkg=linux-source-$VERSION
	if ! apt-cache "${APT_OPTS[@]}" show "$pkg" >/dev/null 2>&1; then
		newest=$(apt-cache "${APT_OPTS[@]}" pkgnames linux-source- |
			grep -E '^linux-source-[0-9]+(\.[0-9]+)*$' | sort -V | tail -n1 || true)
		[ -n "$newest" ] || die "sid has neither $pkg nor any other linux-source-* package"
		echo "[fetch-linux-source] $pkg is not available in sid; using $newest instead" >&2
		pkg=$newest
		VERSION=${pkg#linux-source-}
	fi
	DEB=$(find_deb)
	if [ -z "$DEB" ]; then
		(cd "$DEB_DIR" && apt-get -q download "${APT_OPTS[@]}" "$pkg" >&2) || die "apt-get download $pkg failed"
		DEB=$(find_deb)
	fi
	[ -n "$DEB" ] || die "apt-get download left no $pkg .deb in $DEB_DIR"
fi
[ -f "$DEB" ] || die "no such file: $DEB"
PKG=$(dpkg-deb -f "$DEB" Package)
PKG_VERSION=$(dpkg-deb -f "$DEB" Version)
log "package $PKG $PKG_VERSION ($DEB)"

# --- 2. extract what is needed ---------------------------------------------------
# The .deb holds /usr/src/linux-source-X.tar.xz whose members start with linux-source-X/.
inner=$(dpkg-deb -c "$DEB" | awk '{print $NF}' | grep -E '^\./usr/src/linux-source-[^/]*\.tar\.(xz|gz|bz2|zst)$' | head -n1)
[ -n "$inner" ] || die "$DEB has no usr/src/linux-source-*.tar.* inside"
top=$(basename "$inner"); top=${top%.tar.*}
case $inner in
	*.xz) unz=-J ;; *.gz) unz=-z ;; *.bz2) unz=-j ;; *.zst) unz=--zstd ;;
esac
MEMBERS=(
	"$top/include/uapi"
	"$top/drivers/iommu/iommufd/iommufd_test.h"
	"$top/tools/testing/selftests/kselftest.h"
	"$top/tools/testing/selftests/kselftest_harness.h"
	"$top/tools/testing/selftests/iommu"
	"$top/Documentation/userspace-api/iommufd.rst"
	"$top/tools/testing/selftests/vfio"
	"$top/tools/include"
	"$top/tools/arch/x86/include"
	"$top/tools/arch/arm64/include"
	"$top/drivers/dma/ioat/hw.h"
	"$top/drivers/dma/ioat/registers.h"
	"$top/drivers/dma/idxd/registers.h"
	"$top/include/linux/pci_ids.h"
)
[ "$FULL" = 1 ] && MEMBERS=("$top")
tmp=$DEST.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
log "extracting ${MEMBERS[*]#$top/} from $(basename "$inner")"
start=$(date +%s)
# Stream the inner tarball out of the .deb: no second copy of it on disk.
dpkg-deb --fsys-tarfile "$DEB" | tar -xOf - "$inner" |
	tar -x $unz -f - -C "$tmp" --strip-components=1 "${MEMBERS[@]}" ||
	log "tar reported problems (a listed member may be missing in this version)"
tree_ok "$tmp" || die "extracted tree lacks one of: ${REQUIRED[*]}"
printf 'package=%s %s\nrequested=%s\nfull=%s\n' "$PKG" "$PKG_VERSION" "$REQUESTED" "$FULL" > "$tmp/.ioasid-source"
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
log "extracted in $(( $(date +%s) - start ))s into $DEST"
echo "$DEST"
