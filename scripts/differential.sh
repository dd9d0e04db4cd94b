#!/bin/bash
# The differential check: replays seeded random iommufd operation sequences
# (Tests/Differential/difffuzz.c) under `ioasid run` and compares every answer
# with the transcript the real Linux 7.2 kernel gave for the same sequence
# (conformance/differential/*.txt, recorded with the oracle). Prints the first
# divergence of each transcript with its context and a total.
#
# usage: scripts/differential.sh [--record] [--quiet] [TRANSCRIPT...]
#   TRANSCRIPT   the recorded transcripts to replay (default: all of
#                conformance/differential/*.txt); the seed, the count and the
#                pointer mode are read from each file's first line.
#   --record     record instead: run the static build on the real kernel with
#                the oracle (../shared/oracle/run.sh, built with build.sh) and
#                write conformance/differential/seed-S.txt for S in $SEEDS
#                (default "1 2 3 4 5 6 7 8"), COUNT ops each (default 2000);
#                with NO_BAD_POINTERS=1 the requests use only good pointers, to
#                seed-S-plain.txt; with EXTENDED=1 the generator's extended set
#                (-x: nested HWPTs, vIOMMU objects, queues read back) runs too,
#                to seed-S-extended.txt (or seed-S-plain-extended.txt).
#   --quiet      only the summary.
# Exit status: 0 when every answer is the kernel's, 1 at any divergence.
# environment: IOASID_LINUX_SRC, IOASID_CACHE (see fetch-linux-source.sh), CC,
#              IOASID_BIN (the ioasid tool; default .build/debug/ioasid), ORACLE (the
#              oracle folder; default ../shared/oracle next to the repository).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${IOASID_CACHE:-$HOME/.cache/ioasid}
OUT=$CACHE/differential
RECORD=0
QUIET=0
FILES=()
for a in "$@"; do
	case $a in
	--record) RECORD=1 ;;
	--quiet) QUIET=1 ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	-*) echo "differential: unknown option: $a" >&2; exit 2 ;;
	*) FILES+=("$a") ;;
	esac
done
log() { [ "$QUIET" = 1 ] || echo "[differential] $*" >&2; }
die() { echo "[differential] error: $*" >&2; exit 2; }

# --- the generator, built against the 7.2 uapi and test-driver headers ----------
SRC=$("$ROOT/scripts/fetch-linux-source.sh" --quiet | tail -n1) || die "could not fetch the kernel source"
CC=${CC:-gcc}
mkdir -p "$OUT/include/linux"
for h in linux/iommufd.h; do
	sed -E -e 's/([[:space:](])(__user|__force|__iomem)[[:space:]]/\1/g' \
		-e 's@#(ifndef|define|endif[[:space:]]*/[*])[[:space:]]*_UAPI@#\1 @' \
		"$SRC/include/uapi/$h" > "$OUT/include/$h"
done
# The binaries are named after the generator's content: checkouts sharing the cache never run
# each other's generator.
VERSION=$(sha1sum "$ROOT/Tests/Differential/difffuzz.c" | cut -c1-12)
build() {	# $1 = output, rest = extra flags
	local out=$1; shift
	if [ ! -x "$out" ]; then
		"$CC" -O1 -Wall -isystem "$OUT/include" -I"$SRC/drivers/iommu/iommufd" \
			"$@" -o "$out.$$.tmp" "$ROOT/Tests/Differential/difffuzz.c" || die "building difffuzz failed"
		mv "$out.$$.tmp" "$out"
	fi
}

if [ "$RECORD" = 1 ]; then
	ORACLE=${ORACLE:-$ROOT/../shared/oracle}
	[ -x "$ORACLE/run.sh" ] || die "no oracle at $ORACLE"
	build "$OUT/difffuzz-$VERSION.static" -static
	mkdir -p "$ROOT/conformance/differential"
	for seed in ${SEEDS:-1 2 3 4 5 6 7 8}; do
		file=$ROOT/conformance/differential/seed-$seed.txt
		extra=()
		[ "${NO_BAD_POINTERS:-0}" = 1 ] && { file=${file%.txt}-plain.txt; extra=(-P); }
		[ "${EXTENDED:-0}" = 1 ] && { file=${file%.txt}-extended.txt; extra+=(-x); }
		log "recording seed $seed on the real kernel -> ${file#$ROOT/}"
		ORACLE_TIMEOUT=600 "$ORACLE/run.sh" "$OUT/difffuzz-$VERSION.static" -s "$seed" -n "${COUNT:-2000}" "${extra[@]}" > "$file.tmp" ||
			die "the oracle run of seed $seed failed (exit $?)"
		grep -q '^# end$' "$file.tmp" || die "seed $seed: the transcript is incomplete"
		mv "$file.tmp" "$file"
	done
	exit 0
fi

build "$OUT/difffuzz-$VERSION"
BIN=${IOASID_BIN:-$ROOT/.build/debug/ioasid}
[ -x "$BIN" ] || die "no ioasid tool at $BIN (swift build first)"
[ ${#FILES[@]} -gt 0 ] || FILES=("$ROOT"/conformance/differential/*.txt)
[ -f "${FILES[0]}" ] || die "no transcripts in conformance/differential (record them with --record)"

total=0 equal=0 diverged=0
for file in "${FILES[@]}"; do
	header=$(head -n1 "$file")
	seed=$(sed -nE 's/.*seed=([0-9]+).*/\1/p' <<< "$header")
	count=$(sed -nE 's/.*count=([0-9]+).*/\1/p' <<< "$header")
	pointers=$(sed -nE 's/.*bad-pointers=([01]).*/\1/p' <<< "$header")
	flags=(-s "$seed" -n "$count")
	[ "$pointers" = 0 ] && flags+=(-P)
	grep -q ' extended=1' <<< "$header" && flags+=(-x)
	replay=$OUT/replay-$(basename "$file")
	set +e
	"$BIN" run --privileged -- "$OUT/difffuzz-$VERSION" "${flags[@]}" > "$replay" 2> "$replay.err" < /dev/null
	status=$?
	set -e
	lines=$(grep -c '' "$file")
	same=$(paste -d '\n' "$file" "$replay" | awk 'NR % 2 == 1 { a = $0; next } { if (a == $0) n++ } END { print n + 0 }')
	total=$((total + lines)); equal=$((equal + same))
	first=$( (cmp "$file" "$replay" 2>/dev/null || true) | sed -nE 's/.* line ([0-9]+).*/\1/p')
	if [ -z "$first" ] && cmp -s "$file" "$replay"; then
		log "${file#$ROOT/}: $lines lines, all equal"
		continue
	fi
	diverged=$((diverged + 1))
	[ -n "$first" ] || first=$(( $(grep -c '' "$replay" || true) + 1 ))
	echo "${file#$ROOT/}: first divergence at line $first ($same of $lines lines equal; program exit $status)"
	if [ "$QUIET" = 0 ]; then
		echo "  kernel: $(sed -n "${first}p" "$file")"
		echo "  ioasid: $(sed -n "${first}p" "$replay")"
		[ -s "$replay.err" ] && sed 's/^/  stderr: /' "$replay.err" | head -5
	fi
done
echo "differential: $equal of $total transcript lines equal; ${#FILES[@]} transcripts, $diverged diverged"
[ "$diverged" = 0 ]
