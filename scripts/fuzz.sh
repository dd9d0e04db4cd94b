#!/bin/bash
# Long runs of the dispatcher fuzz test (Tests/IOASIDLinuxABITests/DispatcherFuzzTests.swift):
# random iommufd requests and test-driver commands with random sizes, flags, IDs and pointers
# (never mapped, PROT_NONE, read-only, straddling a page end, bad argument pointers), each
# of which must answer 0 or a negative errno, without a crash, leaking nothing at the end.
#
# usage: scripts/fuzz.sh [--calls TOTAL] [--per-seed N] [seed ...]
#   --calls TOTAL   calls in all (default 10000000), split into runs of N
#   --per-seed N    calls per seed (default 200000: one file's object table stays small enough
#                   that a run keeps its pace)
#   seed ...        the seeds to run (default: random seeds until TOTAL calls are made); a
#                   failing run prints its seed; rerun with the same seed and N to reproduce
# environment: IOASID_FUZZ_ITERATIONS / IOASID_FUZZ_SEED are set for each run.
# Prints one line per run (seed, successful ioctls, seconds) and the total at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
total=10000000
per_seed=200000
seeds=()
while [ $# -gt 0 ]; do
	case $1 in
	--calls) total=$2; shift 2 ;;
	--per-seed) per_seed=$2; shift 2 ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) seeds+=("$1"); shift ;;
	esac
done
[[ $total =~ ^[0-9]+$ && $per_seed =~ ^[0-9]+$ && $per_seed -gt 0 ]] || { echo "fuzz: numbers expected" >&2; exit 2; }
if [ ${#seeds[@]} -eq 0 ]; then
	for ((n = 0; n < (total + per_seed - 1) / per_seed; n++)); do seeds+=("$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"); done
fi
swift build --build-tests < /dev/null
status=0 calls=0 start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for seed in "${seeds[@]}"; do
	if IOASID_FUZZ_ITERATIONS=$per_seed IOASID_FUZZ_SEED=$seed \
		swift test --skip-build --filter 'DispatcherFuzzTests' < /dev/null > "$log" 2>&1; then
		calls=$((calls + per_seed))
		echo "seed $seed: $(grep -o '[0-9]* successful ioctls.*' "$log" | head -n1) — $calls calls so far"
	else
		echo "FAILED: seed $seed (reproduce: IOASID_FUZZ_SEED=$seed IOASID_FUZZ_ITERATIONS=$per_seed swift test --filter DispatcherFuzzTests)"
		grep -E 'recorded an issue|error|Fatal|signal' "$log" | head -n 20
		status=1
	fi
done
echo "fuzz: $calls calls in $(( $(date +%s) - start )) s, ${#seeds[@]} seeds, $([ $status = 0 ] && echo 'no failure' || echo 'FAILURES')"
exit $status
