#!/bin/bash
# Builds Examples/machine/dma.c against the Linux 7.2 uapi headers and our include/ioasid, and
# runs it under `ioasid run --machine vtd,smmuv3`: a C program binding devices of the modelled
# machine through VFIO cdevs, mapping memory with iommufd, and making the devices DMA through
# the software VT-d and SMMUv3 (docs/machine.md).
#
# usage: scripts/machine-example.sh [--trace]
# environment: CC (default gcc); the Linux source comes from scripts/fetch-linux-source.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CC=${CC:-gcc}
TRACE=()
[ "${1:-}" = "--trace" ] && TRACE=(--trace)
die() { echo "[machine-example] error: $*" >&2; exit 2; }

SRC=$("$ROOT/scripts/fetch-linux-source.sh" --quiet | tail -n1) || die "no Linux source"
HDR=$(mktemp -d -t ioasid-machine.XXXXXX)
trap 'rm -rf "$HDR"' EXIT
mkdir -p "$HDR/linux"
# What `make headers_install` does to these two headers, as far as this program needs.
for h in iommufd vfio; do
	sed -e 's/__user//g' -e 's/__counted_by([a-z_]*)//g' "$SRC/include/uapi/linux/$h.h" > "$HDR/linux/$h.h"
done
OUT=$ROOT/.build/examples
mkdir -p "$OUT"
"$CC" -O2 -Wall -Wextra -isystem "$HDR" -I "$ROOT/include" -o "$OUT/machine-dma" "$ROOT/Examples/machine/dma.c" ||
	die "$CC failed on Examples/machine/dma.c"
IOASID=$ROOT/.build/debug/ioasid
[ -x "$IOASID" ] || IOASID=$ROOT/.build/release/ioasid
[ -x "$IOASID" ] || die "build ioasid first (swift build)"
exec "$IOASID" run "${TRACE[@]}" --machine vtd,smmuv3 -- "$OUT/machine-dma" 2
