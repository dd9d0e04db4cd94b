#!/bin/bash
# Build the API documentation (DocC) of the public modules, offline: the swift-docc-plugin
# package (a dependency in Package.swift) runs the toolchain's `docc` on each module's symbol
# graph and its catalog (Sources/MODULE/MODULE.docc: the landing page and the articles).
#
# usage: scripts/docs.sh [--check] [--out DIR]
#   --check      fail if DocC reports any warning about the project's own documentation
#                (a broken symbol link, an unknown topic, a malformed doc comment)
#   --out DIR    where the combined archive goes (default .build/docs/ioasid.doccarchive)
#
# The archive is static: open it with `docc preview` or serve DIR with any static web server.
# exit status: 0 when the documentation was built (and, with --check, had no warnings)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/.build/docs/ioasid.doccarchive
CHECK=0
while [ $# -gt 0 ]; do
	case $1 in
	--check) CHECK=1; shift ;;
	--out) [ $# -ge 2 ] || { echo "docs.sh: --out needs a value" >&2; exit 2; }; OUT=$2; shift 2 ;;
	--out=*) OUT=${1#--out=}; shift ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "docs.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
done

# The modules a user imports (the product IOASID), each with its own catalog or doc comments.
TARGETS=(IOASIDCore IOASIDStructures IOASIDSoftIOMMU IOASIDSoftDrivers IOASIDSets IOASIDTestDriver IOASIDProcessMemory IOASIDLinuxABI)
ARGS=()
for t in "${TARGETS[@]}"; do ARGS+=(--target "$t"); done

mkdir -p "$(dirname "$OUT")"
LOG=$(mktemp -t ioasid-docs.XXXXXX)
trap 'rm -f "$LOG"' EXIT
cd "$ROOT"
set +e
swift package --allow-writing-to-directory "$(dirname "$OUT")" generate-documentation \
	--enable-experimental-combined-documentation --output-path "$OUT" "${ARGS[@]}" 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}
set -e
[ "$STATUS" = 0 ] || { echo "docs.sh: generate-documentation failed ($STATUS)" >&2; exit 1; }

# DocC's warnings (each "warning: WHAT" followed by "--> FILE:LINE"): only the modules above
# are converted, so every one is about our doc comments or catalogs.
WARNINGS=$(grep -E -A1 "^warning: " "$LOG" | grep -v "^--$" || true)
COUNT=$(printf '%s\n' "$WARNINGS" | grep -c "^warning: " || true)
echo "docs.sh: $OUT ($COUNT DocC warnings)"
if [ "$CHECK" = 1 ] && [ "$COUNT" != 0 ]; then
	printf '%s\n' "$WARNINGS" >&2
	exit 1
fi
