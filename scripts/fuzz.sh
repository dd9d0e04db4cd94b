#!/bin/bash
# Long runs of the dispatcher fuzz test (Tests/IOASIDLinuxABITests/DispatcherFuzzTests.swift).
#
# usage: scripts/fuzz.sh [iterations] [seed ...]
#   iterations  per seed (default 1000000)
#   seed        one run per seed (default: one random seed); a failing run prints its seed,
#               rerun it with the same seed to reproduce
# environment: IOASID_FUZZ_ITERATIONS / IOASID_FUZZ_SEED are set from the arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-1000000}
shift || true
seeds=("$@")
if [ ${#seeds[@]} -eq 0 ]; then seeds=("$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"); fi
swift build --build-tests
status=0
for seed in "${seeds[@]}"; do
    echo "== seed $seed, $iterations iterations"
    if ! IOASID_FUZZ_ITERATIONS=$iterations IOASID_FUZZ_SEED=$seed \
        swift test --skip-build --filter 'DispatcherFuzzTests'; then
        echo "FAILED: seed $seed (reproduce: IOASID_FUZZ_SEED=$seed IOASID_FUZZ_ITERATIONS=$iterations)"
        status=1
    fi
done
exit $status
