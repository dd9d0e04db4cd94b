#!/bin/bash
# Provide QEMU 10.0 (qemu-system-x86_64 with the iommufd backend) from Debian's
# backports suite of the machine's release (bookworm-backports on Debian 12),
# without touching the machine's own QEMU or apt configuration: the three
# packages (qemu-system-x86, -common, -data) are fetched with apt as a separate,
# download-only source whose archive address is read at run time from the
# machine's Debian entry, unpacked into a cache folder, and started through a
# small wrapper that points QEMU at its modules and firmware.  Shared libraries
# QEMU needs and the machine lacks are installed from the machine's own suite
# (root or passwordless sudo needed only then).
#
# usage: scripts/qemu-setup.sh [--quiet]
#   Prints the path of the qemu-system-x86_64 to use as the last line on stdout.
#
# environment:
#   IOASID_QEMU         use this qemu-system-x86_64 (checked: version 10 or later)
#   IOASID_QEMU_CACHE   cache folder (default ~/.cache/ioasid-qemu)
#   IOASID_QEMU_DEBS    a folder that already holds the three .debs (no download)
#   IOASID_DEBIAN_MIRROR  archive URI to use when the machine has no Debian entry
set -euo pipefail

CACHE=${IOASID_QEMU_CACHE:-$HOME/.cache/ioasid-qemu}
QUIET=0
for a in "$@"; do
	case $a in
	--quiet) QUIET=1 ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "qemu-setup: unknown argument: $a" >&2; exit 2 ;;
	esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { [ "$QUIET" = 1 ] || echo "[qemu-setup] $*" >&2; }
die() { echo "[qemu-setup] error: $*" >&2; exit 1; }
as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
	else die "need root for: $*"
	fi
}
major_of() {	# QEMU's major version, or 0
	"$1" --version 2>/dev/null | sed -n '1s/^QEMU emulator version \([0-9]*\).*/\1/p' | grep . || echo 0
}

if [ -n "${IOASID_QEMU:-}" ]; then
	[ "$(major_of "$IOASID_QEMU")" -ge 10 ] || die "IOASID_QEMU=$IOASID_QEMU is not QEMU 10 or later"
	echo "$IOASID_QEMU"; exit 0
fi
WRAPPER=$CACHE/bin/qemu-system-x86_64
if [ -x "$WRAPPER" ] && [ "$(major_of "$WRAPPER")" -ge 10 ]; then
	log "using cached $("$WRAPPER" --version | head -n1)"
	echo "$WRAPPER"; exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.setup.lock"
flock 9

# --- 1. the .debs from <codename>-backports ----------------------------------------
PKGS=(qemu-system-x86 qemu-system-common qemu-system-data)
DEBS=${IOASID_QEMU_DEBS:-$CACHE/debs}
have_debs() { local p; for p in "${PKGS[@]}"; do ls "$DEBS/${p}"_*.deb >/dev/null 2>&1 || return 1; done; }
if ! have_debs; then
	. "$HERE/debian-archive.sh"
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release"
	uri=${IOASID_DEBIAN_MIRROR:-$(debian_uri | head -n1)}
	[ -n "$uri" ] || die "no Debian archive entry found in /etc/apt; set IOASID_DEBIAN_MIRROR"
	log "fetching ${PKGS[*]} from $codename-backports of the machine's Debian archive"
	APT_DIR=$CACHE/apt
	mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$DEBS"
	echo "deb $uri $codename-backports main" > "$APT_DIR/backports.list"
	APT_OPTS=(
		-o Dir::Etc::sourcelist="$APT_DIR/backports.list"
		-o Dir::Etc::sourceparts=-
		-o Dir::State::Lists="$APT_DIR/lists"
		-o Dir::Cache="$APT_DIR/cache"
		-o APT::Get::List-Cleanup=0
	)
	[ "$(id -u)" = 0 ] && APT_OPTS+=(-o APT::Sandbox::User=root)
	apt-get -q update "${APT_OPTS[@]}" >&2 || die "apt-get update of $codename-backports failed"
	(cd "$DEBS" && apt-get -q download "${APT_OPTS[@]}" "${PKGS[@]}" >&2) || die "apt-get download failed"
	have_debs || die "apt-get download left no .debs in $DEBS"
fi

# --- 2. unpack -----------------------------------------------------------------------------
ROOT=$CACHE/root
rm -rf "$ROOT.tmp"
mkdir -p "$ROOT.tmp"
for p in "${PKGS[@]}"; do
	d=$(ls "$DEBS/${p}"_*.deb | sort -V | tail -n1)
	log "unpacking $(basename "$d")"
	dpkg-deb -x "$d" "$ROOT.tmp"
done
rm -rf "$ROOT"
mv "$ROOT.tmp" "$ROOT"
BIN=$ROOT/usr/bin/qemu-system-x86_64
[ -x "$BIN" ] || die "no qemu-system-x86_64 in the packages"

# --- 3. what the binary needs from the machine ------------------------------------------
# Shared libraries: the package's Depends names them; install the missing ones from
# the machine's own suite.  Firmware: SeaBIOS and the iPXE option ROMs.
deps=$(for p in qemu-system-x86 qemu-system-common; do
	dpkg-deb -f "$(ls "$DEBS/${p}"_*.deb | sort -V | tail -n1)" Depends; done |
	tr ',' '\n' | sed 's/([^)]*)//; s/|.*//; s/[[:space:]]//g' | grep -v '^qemu-' | sort -u)
missing=$(for p in $deps; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | xargs)
if [ -n "$missing" ]; then
	log "installing from the machine's suite: $missing"
	as_root apt-get update -qq
	DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $missing < /dev/null
fi
if ldd "$BIN" | grep -q 'not found'; then
	die "qemu-system-x86_64 lacks libraries: $(ldd "$BIN" | grep 'not found' | xargs)"
fi

# --- 4. wrapper ------------------------------------------------------------------------------
mkdir -p "$CACHE/bin"
cat > "$WRAPPER.tmp" <<WRAP
#!/bin/sh
# QEMU from $(dpkg-deb -f "$(ls "$DEBS"/qemu-system-x86_*.deb | sort -V | tail -n1)" Version), unpacked by scripts/qemu-setup.sh
export QEMU_MODULE_DIR=$ROOT/usr/lib/x86_64-linux-gnu/qemu
exec $BIN -L $ROOT/usr/share/qemu -L /usr/share/qemu -L /usr/share/seabios "\$@"
WRAP
chmod +x "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"
[ "$(major_of "$WRAPPER")" -ge 10 ] || die "$WRAPPER does not report QEMU 10 or later"
log "ready: $("$WRAPPER" --version | head -n1)"
echo "$WRAPPER"
