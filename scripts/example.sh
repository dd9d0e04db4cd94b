#!/bin/bash
# Build and run the VMM example (Examples/vmm/vmm.c) against ioasid: an unmodified
# C program that drives /dev/iommu the way a virtual machine monitor does, run
# under `ioasid run --trace --`.
#
# The example needs the Linux 7.2 uapi header linux/iommufd.h and the mock
# driver's iommufd_test.h, which are newer than most distributions ship: they
# are taken from the source tree scripts/fetch-linux-source.sh provides (it
# downloads it into a cache on first use) and copied into a temporary include
# folder. Nothing of the kernel is written into the repository.
#
# usage: scripts/example.sh [options] [-- VMM_ARGS...]
#   --config NAME      build and use this configuration, debug or release
#                      (default: release if it was ever built, else debug)
#   --no-trace         run without --trace
#   --report FILE      also write the HTML report of the run to FILE (docs/report.md)
#   --static           also build a statically linked copy (.build/examples/vmm-static),
#                      e.g. to run on a real kernel with CONFIG_IOMMUFD_TEST
#   --compile-only     build the example and ioasid, do not run it
#
# ioasid is always built first (`swift build`, a no-op when nothing changed), so
# the example never runs against a stale build. The example is built into
# .build/examples/ and run from there as ./vmm.
# environment: CC (default gcc), CFLAGS, IOASID_LINUX_SRC / IOASID_CACHE (see
#   scripts/fetch-linux-source.sh)
# exit status: the example's own (0 when all steps passed), 2 if it could not be built
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CC=${CC:-gcc}
CONFIG=""
TRACE=(--trace)
STATIC=0
RUN=1
REPORT=()
ARGS=()

log() { echo "[example] $*" >&2; }
die() { echo "[example] error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case $1 in
	--build) shift ;;	# the default; kept so older invocations still work
	--config)
		[ $# -ge 2 ] || die "--config needs a value"
		CONFIG=$2; shift 2
		case $CONFIG in debug|release) ;; *) die "--config must be debug or release" ;; esac ;;
	--config=*) CONFIG=${1#--config=}; shift
		case $CONFIG in debug|release) ;; *) die "--config must be debug or release" ;; esac ;;
	--no-trace) TRACE=(); shift ;;
	--report)
		[ $# -ge 2 ] || die "--report needs a file name"
		REPORT=("--report=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); shift 2 ;;
	--report=*) f=${1#--report=}; REPORT=("--report=$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"); shift ;;
	--static) STATIC=1; shift ;;
	--compile-only) RUN=0; shift ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	--) shift; ARGS=("$@"); break ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

command -v "$CC" >/dev/null || die "no C compiler '$CC' (install gcc, or set CC)"

# --- 1. the kernel headers ------------------------------------------------------
SRC=$("$ROOT/scripts/fetch-linux-source.sh" --quiet | tail -n1) ||
	die "scripts/fetch-linux-source.sh could not provide the Linux source"
[ -f "$SRC/include/uapi/linux/iommufd.h" ] && [ -f "$SRC/drivers/iommu/iommufd/iommufd_test.h" ] ||
	die "$SRC lacks include/uapi/linux/iommufd.h or drivers/iommu/iommufd/iommufd_test.h"
HDR=$(mktemp -d -t ioasid-example.XXXXXX)
trap 'rm -rf "$HDR"' EXIT
mkdir -p "$HDR/linux"
cp "$SRC/include/uapi/linux/iommufd.h" "$HDR/linux/iommufd.h"
cp "$SRC/drivers/iommu/iommufd/iommufd_test.h" "$HDR/iommufd_test.h"

# --- 2. the example -------------------------------------------------------------
OUT=$ROOT/.build/examples
mkdir -p "$OUT"
# shellcheck disable=SC2086  # CFLAGS is a list of words
compile() {	# $1 = output, then extra flags
	local out=$1; shift
	"$CC" -O2 -g -Wall -Wextra ${CFLAGS:-} -isystem "$HDR" "$@" \
		-o "$out" "$ROOT/Examples/vmm/vmm.c" || die "$CC failed on Examples/vmm/vmm.c"
}
log "$CC Examples/vmm/vmm.c -> .build/examples/vmm"
compile "$OUT/vmm"
if [ "$STATIC" = 1 ]; then
	log "$CC -static Examples/vmm/vmm.c -> .build/examples/vmm-static"
	compile "$OUT/vmm-static" -static
fi
rm -rf "$HDR"
trap - EXIT

# --- 3. ioasid --------------------------------------------------------------------
built() {	# $1 = configuration; true when the launcher and both libraries are there
	local d=$ROOT/.build/$1
	[ -x "$d/ioasid" ] && [ -f "$d/libioasid-preload.so" ] && [ -f "$d/libIOASIDEngine.so" ]
}
if [ -z "$CONFIG" ]; then
	if built release; then CONFIG=release; else CONFIG=debug; fi
fi
command -v swift >/dev/null || die "swift is needed to build ioasid"
log "swift build -c $CONFIG"
(cd "$ROOT" && swift build -c "$CONFIG" >&2) || die "swift build -c $CONFIG failed"
built "$CONFIG" || die "swift build -c $CONFIG did not produce ioasid and its libraries"
BIN=$(cd "$ROOT" && swift build -c "$CONFIG" --show-bin-path 2>/dev/null) || BIN=$ROOT/.build/$CONFIG
IOASID=$BIN/ioasid
[ -x "$IOASID" ] || die "no ioasid launcher at $IOASID"

[ "$RUN" = 1 ] || { log "built $OUT/vmm; ioasid is $IOASID"; exit 0; }

# --- 4. run ---------------------------------------------------------------------------
cd "$OUT"
log "${IOASID#"$ROOT"/} run ${TRACE[*]} ${REPORT[*]} -- ./vmm ${ARGS[*]}"
exec "$IOASID" run "${TRACE[@]}" "${REPORT[@]}" -- ./vmm "${ARGS[@]}"
