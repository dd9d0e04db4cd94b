#!/bin/bash
# Run the concurrency stress suite under ThreadSanitizer (CI adds the VFIO eventfd watcher's
# suite); a report makes the run fail (TSan's exit code).
#
# usage: scripts/tsan.sh [extra swift test arguments, e.g. --filter SuiteName to add a suite]
# environment:
#   IOASID_STRESS_OPS   operations per thread (default 5000; the suite also stops after 8 s)
#   TSAN_OPTIONS        passed through (default: halt_on_error=0, so every report is listed)
#
# Uses its own build folder (.build-tsan) so sanitized objects never mix with the normal build.
#
# Context's lock is a pthread mutex (ContextLock) because ThreadSanitizer does not model
# Synchronization.Mutex on Linux (a futex in an uninstrumented standard library): with it, TSan
# reported false races between accesses the lock serializes. With the pthread lock the stress
# suite runs clean; any report now is worth reading.
set -uo pipefail
cd "$(dirname "$0")/.."
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0 second_deadlock_stack=1}
log=$(mktemp)
swift test --scratch-path .build-tsan --sanitize=thread --filter Stress "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "== ThreadSanitizer summary (distinct locations):"
grep '^SUMMARY: ThreadSanitizer' "$log" | sort | uniq -c | sort -rn || echo "   none"
rm -f "$log"
exit "$status"
