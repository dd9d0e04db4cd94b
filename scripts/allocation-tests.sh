#!/bin/bash
# The zero-allocation tests with the project's malloc counter loaded, so that they check their
# count (without it they only exercise the paths): the translation paths of the software VT-d
# and SMMUv3 and the bulk DMA path, each required to make 0 heap allocations per call once warm.
#
# usage: scripts/allocation-tests.sh [--no-build]
#   builds the counter (scripts/bench-preload.sh build .build/malloccount) and the tests, then
#   runs the suites one test at a time (the counter is process-wide) with LD_PRELOAD=libmalloccount.so and IOASID_MALLOC_COUNTER=required (a test
#   whose counter is missing fails instead of skipping the count).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
build=1
[ "${1:-}" = "--no-build" ] && build=0
"$ROOT/scripts/bench-preload.sh" build "$ROOT/.build/malloccount" > /dev/null
counter=$ROOT/.build/malloccount/libmalloccount.so
[ -f "$counter" ] || { echo "allocation-tests: no $counter" >&2; exit 1; }
[ $build = 1 ] && swift build --build-tests < /dev/null
# The suites whose tests count allocations (MallocCounter.swift's fewestMallocs).
suites='TranslationAllocationTests|VTdAllocationTests|SMMUv3TranslationTests|PCIFunctionBulkTests'
output=$(mktemp)
trap 'rm -f "$output"' EXIT
status=0
LD_PRELOAD=$counter IOASID_MALLOC_COUNTER=required swift test --skip-build --no-parallel --filter "$suites" < /dev/null > "$output" 2>&1 || status=$?
grep -E '✘|passed after|failed after|error' "$output" | grep -vE '^◇' | tail -n 40
[ $status = 0 ] || { echo "allocation-tests: FAILED (exit $status)"; exit $status; }
echo "allocation-tests: every counted path made 0 allocations"
