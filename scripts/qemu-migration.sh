#!/bin/bash
# Live-migrate a running Linux guest with an assigned device from one QEMU 10 to a second one,
# each inside its own `ioasid run --machine vtd:ioat`, while the guest's dmatest copies through
# the device. The device is ioasid's modelled I/OAT, assigned through QEMU's iommufd backend
# with `enable-migration=on`: QEMU moves it through the VFIO migration states (the device's
# state travels in the migration stream) and tracks the pages the device writes with IOMMU
# dirty tracking (a HWPT allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING on the software VT-d).
#
# The test passes when the source reports "Migration status: completed" with the device's
# state in the stream, the source guest had started dmatest and not finished it, and the
# guest reports PASS (every copy verified, 0 failures, MSI-X interrupts) on the destination.
#
# usage: scripts/qemu-migration.sh [options]
#   --iterations N      dmatest copies the guest runs (default 30000: about 25 s of TCG time,
#                       long enough to migrate in the middle)
#   --timeout SECONDS   limit for each QEMU (default 300)
#   --ioasid PATH       the ioasid launcher (default: the newest of .build/release and .build/debug)
#   --out DIR           logs folder (default: qemu-migration-results in the repository)
#
# In the logs folder: source.serial and destination.serial (the guest's console before and
# after the move), *.stderr, source.trace (`ioasid run --trace` of the source), monitor.log (the
# source monitor's answers) and summary.txt, which counts the source's dirty-tracking calls and
# reads of the device's migration data descriptor.
#
# The source's monitor is a pair of FIFOs (QEMU's `pipe` chardev), so the script needs nothing
# beyond bash; the migration stream goes over a Unix socket (`-incoming unix:PATH`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ITERATIONS=30000
TIMEOUT=300
IOASID=""
OUT=$ROOT/qemu-migration-results
need_arg() { [ $# -ge 2 ] || { echo "qemu-migration: $1 needs an argument" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
	case $1 in
	--iterations) need_arg "$@"; ITERATIONS=$2; shift 2 ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift 2 ;;
	--ioasid) need_arg "$@"; IOASID=$2; shift 2 ;;
	--out) need_arg "$@"; OUT=$2; shift 2 ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "qemu-migration: unknown argument: $1" >&2; exit 2 ;;
	esac
done
log() { echo "[qemu-migration] $*" >&2; }
die() { echo "[qemu-migration] error: $*" >&2; exit 1; }
[[ $ITERATIONS =~ ^[0-9]+$ ]] && [ "$ITERATIONS" -gt 0 ] || die "--iterations needs a positive number"

if [ -z "$IOASID" ]; then
	IOASID=$(ls -t "$ROOT"/.build/release/ioasid "$ROOT"/.build/debug/ioasid 2>/dev/null | head -n1 || true)
fi
[ -n "$IOASID" ] && [ -x "$IOASID" ] || die "no ioasid launcher (build it with swift build, or pass --ioasid)"
QEMU=$("$ROOT/scripts/qemu-setup.sh" --quiet | tail -n1)
GUEST=$("$ROOT/scripts/guest-build.sh" --quiet | tail -n1)
BDF=$("$IOASID" devices --machine vtd:ioat | awk '{print $1; exit}')
[ -n "$BDF" ] || die "ioasid devices printed no device"
mkdir -p "$OUT"
rm -f "$OUT"/*.serial "$OUT"/*.stderr "$OUT"/*.trace "$OUT/monitor.log" "$OUT/summary.txt"
RUN=$(mktemp -d)
SRC_PID=""; DST_PID=""
cleanup() {
	for pid in $SRC_PID $DST_PID; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$RUN"
}
trap cleanup EXIT

# The same machine on both sides (QEMU requires it); the destination adds -incoming. The BAR
# is not mmapped (x-no-mmap): QEMU would otherwise ask for the dirty bits of the BAR's
# ram-device section after the MSI-X table, a range that is not page aligned, which iommufd
# refuses (EINVAL) as the kernel does.
MACHINE=(-accel tcg -M q35 -bios qboot.rom -m 512 -nographic -no-reboot
	-kernel "$GUEST/bzImage" -initrd "$GUEST/initramfs.cpio"
	-append "console=ttyS0 panic=-1 ioasid.iterations=$ITERATIONS"
	-object iommufd,id=iommufd0
	-device "vfio-pci,host=$BDF,iommufd=iommufd0,enable-migration=on,x-no-mmap=on")

mkfifo "$RUN/mon.in" "$RUN/mon.out"
log "source: $IOASID run --machine vtd:ioat -- $QEMU ${MACHINE[*]} -chardev pipe,id=mon0,path=$RUN/mon -mon chardev=mon0"
timeout -k 10 "$TIMEOUT" "$IOASID" run --machine vtd:ioat --trace="$OUT/source.trace" -- "$QEMU" "${MACHINE[@]}" \
	-serial "file:$OUT/source.serial" -chardev "pipe,id=mon0,path=$RUN/mon" -mon chardev=mon0,mode=readline \
	< /dev/null > /dev/null 2> "$OUT/source.stderr" &
SRC_PID=$!
log "destination: the same with -incoming unix:$RUN/migration.sock"
timeout -k 10 "$TIMEOUT" "$IOASID" run --machine vtd:ioat -- "$QEMU" "${MACHINE[@]}" \
	-serial "file:$OUT/destination.serial" -incoming "unix:$RUN/migration.sock" \
	< /dev/null > /dev/null 2> "$OUT/destination.stderr" &
DST_PID=$!
cat "$RUN/mon.out" > "$OUT/monitor.log" &
exec 7> "$RUN/mon.in"
monitor() { printf '%s\n' "$*" >&7; }

# Wait for dmatest to start on the source, then migrate while it runs.
waited=0
until grep -q 'dmatest: Started' "$OUT/source.serial" 2>/dev/null; do
	sleep 1; waited=$((waited + 1))
	[ "$waited" -lt "$TIMEOUT" ] || die "the source guest did not start dmatest"
	kill -0 "$SRC_PID" 2>/dev/null || die "the source QEMU ended: $(tail -n1 "$OUT/source.stderr")"
done
sleep 3
log "migrating while dmatest runs"
monitor "migrate unix:$RUN/migration.sock"
status=""
for _ in $(seq 1 "$TIMEOUT"); do
	sleep 1
	monitor "info migrate"
	sleep 0.2
	status=$(sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$OUT/monitor.log" | sed -n 's/.*Migration status: \([a-z-]*\).*/\1/p' | tail -n1)
	case $status in completed|failed|cancelled) break ;; esac
done
monitor "quit"
exec 7>&-
[ "$status" = completed ] || die "migration status: ${status:-none} (logs in $OUT)"

# The destination runs the guest to its end.
waited=0
while kill -0 "$DST_PID" 2>/dev/null && [ "$waited" -lt "$TIMEOUT" ]; do sleep 1; waited=$((waited + 1)); done
DST_PID=""
result=$(sed -n 's/.*\(IOASID-GUEST \(PASS\|FAIL\) .*\)/\1/p' "$OUT/destination.serial" | tail -n1)
source_result=$(sed -n 's/.*\(IOASID-GUEST \(PASS\|FAIL\) .*\)/\1/p' "$OUT/source.serial" | tail -n1)
device=$(sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$OUT/monitor.log" | grep -o 'vfio device transferred: [0-9]* kbytes' | tail -n1 || true)
{
	echo "migration: completed${device:+ ($device)}"
	t=$OUT/source.trace
	printf 'source trace: %d IOMMU_HWPT_SET_DIRTY_TRACKING, %d IOMMU_HWPT_GET_DIRTY_BITMAP, %d reads of the migration data descriptor\n' \
		"$(grep -c ' IOMMU_HWPT_SET_DIRTY_TRACKING ' "$t" || true)" "$(grep -c ' IOMMU_HWPT_GET_DIRTY_BITMAP ' "$t" || true)" \
		"$(grep -c 'vfio-migration:[0-9]* read ' "$t" || true)"
	echo "source:      ${source_result:-no result (migrated away before dmatest ended)}"
	echo "destination: ${result:-NO RESULT}"
} | tee "$OUT/summary.txt"
[ -z "$source_result" ] || die "the source guest finished dmatest before the migration: nothing was migrated in flight"
case $result in "IOASID-GUEST PASS "*) log "passed (logs in $OUT)" ;; *) die "the guest did not pass on the destination (logs in $OUT)" ;; esac
