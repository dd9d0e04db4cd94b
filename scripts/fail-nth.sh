#!/bin/bash
# Run the Linux kernel's fault-injection selftest (tools/testing/selftests/iommu/iommufd_fail_nth.c)
# against ioasid: each of its 8 tests runs once, then again with fail-nth armed at 1, 2, 3, ...
# (every allocation, pin and user copy inside ioasid in turn) until a run reaches no injection
# point, checking after each that nothing leaked (IOMMU_TEST_OP_MD_CHECK_REFS after close).
# It runs under `ioasid run --fault-injection` (docs/fault-injection.md).
#
# usage: scripts/fail-nth.sh [conformance.sh options], e.g.
#   scripts/fail-nth.sh --baseline conformance/fail-nth-baseline --quiet
# This is `scripts/conformance.sh --fail-nth`; see that script for the options and results.
exec "$(dirname "${BASH_SOURCE[0]}")/conformance.sh" --fail-nth "$@"
