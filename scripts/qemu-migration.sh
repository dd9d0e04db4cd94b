#!/bin/bash
# Live-migrate a running Linux guest with assigned devices from one QEMU 10 to a second one,
# each inside its own `ioasid run --machine vtd:ioat:2`, while the guest's dmatest copies through
# the first device. The devices are ioasid's modelled I/OAT, assigned through QEMU's iommufd
# backend with `enable-migration=on`: QEMU moves them through the VFIO migration states (their
# state travels in the migration stream) and tracks the pages they write with IOMMU dirty
# tracking (a HWPT allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING on the software VT-d).
#
# The second device serves the guest module ioasid_dmacheck (scripts/guest/ioasid_dmacheck.c):
# it rewrites a 4 MiB buffer by DMA every 100 ms, which the guest's CPU only reads, and records
# its checksum. Only IOMMU dirty tracking can tell QEMU that those pages changed. The script
# holds the migration in pre-copy (downtime-limit 0) until the first pass over RAM has been
# sent, lets the device rewrite the buffer for another second, stops the module with an NMI
# from the monitor, and only then lets the migration finish (downtime-limit 300 ms). On the
# destination the guest checksums the buffer again.
#
# The test passes when the source reports "Migration status: completed" with the devices'
# state in the stream, the source guest had started dmatest and not finished it, the guest
# reports PASS on the destination (every dmatest copy verified, 0 failures, MSI-X interrupts)
# and the module's line there is "IOASID-DMACHECK PASS" (the buffer's checksum equals the one
# recorded on the source when the device last wrote it).
#
# usage: scripts/qemu-migration.sh [options]
#   --iterations N      dmatest copies the guest runs (default 30000: about 25 s of TCG time,
#                       long enough to migrate in the middle)
#   --timeout SECONDS   limit for each QEMU (default 300)
#   --ioasid PATH       the ioasid launcher (default: the newest of .build/release and .build/debug)
#   --out DIR           logs folder (default: qemu-migration-results in the repository)
#   --no-dirty-bits     run both sides with ioasid's test knob IOASID_TEST_NO_DIRTY_BITS=1 (the
#                       software VT-d records no device write as dirty): the test must then
#                       FAIL. This shows that it catches lost dirty pages.
#
# In the logs folder: source.serial and destination.serial (the guest's console before and
# after the move), *.stderr, source.trace (`ioasid run --trace` of the source), monitor.log (the
# source monitor's answers) and summary.txt, which counts the source's dirty-tracking calls and
# reads of the devices' migration data descriptors and gives the module's lines.
#
# The source's monitor is a pair of FIFOs (QEMU's `pipe` chardev), so the script needs nothing
# beyond bash; the migration stream goes over a Unix socket (`-incoming unix:PATH`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ITERATIONS=30000
TIMEOUT=300
IOASID=""
OUT=$ROOT/qemu-migration-results
NO_DIRTY_BITS=0
need_arg() { [ $# -ge 2 ] || { echo "qemu-migration: $1 needs an argument" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
	case $1 in
	--iterations) need_arg "$@"; ITERATIONS=$2; shift 2 ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift 2 ;;
	--ioasid) need_arg "$@"; IOASID=$2; shift 2 ;;
	--out) need_arg "$@"; OUT=$2; shift 2 ;;
	--no-dirty-bits) NO_DIRTY_BITS=1; shift ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "qemu-migration: unknown argument: $1" >&2; exit 2 ;;
	esac
done
log() { echo "[qemu-migration] $*" >&2; }
die() { echo "[qemu-migration] error: $*" >&2; exit 1; }
[[ $ITERATIONS =~ ^[0-9]+$ ]] && [ "$ITERATIONS" -gt 0 ] || die "--iterations needs a positive number"

. "$ROOT/scripts/qemu-common.sh"
qemu_prepare
SPEC=vtd:ioat:2
BDFS=($("$IOASID" devices --machine $SPEC | awk '{print $1}'))
[ ${#BDFS[@]} = 2 ] || die "ioasid devices printed ${#BDFS[@]} devices, not 2"
if [ "$NO_DIRTY_BITS" = 1 ]; then
	export IOASID_TEST_NO_DIRTY_BITS=1
	log "test knob IOASID_TEST_NO_DIRTY_BITS=1: device writes are not recorded as dirty; this run must fail"
else
	unset IOASID_TEST_NO_DIRTY_BITS
fi
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

# The same machine on both sides (QEMU requires it); the destination adds -incoming. The BARs
# are not mmapped (x-no-mmap): QEMU would otherwise ask for the dirty bits of the BAR's
# ram-device section after the MSI-X table, a range that is not page aligned, which iommufd
# refuses (EINVAL) as the kernel does. Two devices migrate together because both support the
# P2P states (QEMU requires that of every device when there are several).
MACHINE=(-accel tcg -M q35 -bios qboot.rom -m 512 -nographic -no-reboot
	-kernel "$GUEST/bzImage" -initrd "$GUEST/initramfs.cpio"
	-append "console=ttyS0 panic=-1 ioasid.iterations=$ITERATIONS ioasid.dmacheck=1"
	-object iommufd,id=iommufd0
	-device "vfio-pci,host=${BDFS[0]},iommufd=iommufd0,enable-migration=on,x-no-mmap=on"
	-device "vfio-pci,host=${BDFS[1]},iommufd=iommufd0,enable-migration=on,x-no-mmap=on")

mkfifo "$RUN/mon.in" "$RUN/mon.out"
log "source: $IOASID run --machine $SPEC -- $QEMU ${MACHINE[*]} -chardev pipe,id=mon0,path=$RUN/mon -mon chardev=mon0"
timeout -k 10 "$TIMEOUT" "$IOASID" run --machine $SPEC --trace="$OUT/source.trace" -- "$QEMU" "${MACHINE[@]}" \
	-serial "file:$OUT/source.serial" -chardev "pipe,id=mon0,path=$RUN/mon" -mon chardev=mon0,mode=readline \
	< /dev/null > /dev/null 2> "$OUT/source.stderr" &
SRC_PID=$!
log "destination: the same with -incoming unix:$RUN/migration.sock"
timeout -k 10 "$TIMEOUT" "$IOASID" run --machine $SPEC -- "$QEMU" "${MACHINE[@]}" \
	-serial "file:$OUT/destination.serial" -incoming "unix:$RUN/migration.sock" \
	< /dev/null > /dev/null 2> "$OUT/destination.stderr" &
DST_PID=$!
cat "$RUN/mon.out" > "$OUT/monitor.log" &
exec 7> "$RUN/mon.in"
monitor() { printf '%s\n' "$*" >&7; }

# The last answer of `info migrate` to FIELD (its number or word), from the monitor log.
migrate_field() {
	sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$OUT/monitor.log" | sed -n "s/.*$1: *\([0-9a-z-]*\).*/\1/Ip" | tail -n1
}
# Waits until the source's console shows PATTERN.
wait_source() {
	local waited=0
	until grep -q "$1" "$OUT/source.serial" 2>/dev/null; do
		sleep 0.5; waited=$((waited + 1))
		[ "$waited" -lt $((2 * TIMEOUT)) ] || die "the source guest never printed '$1'"
		kill -0 "$SRC_PID" 2>/dev/null || die "the source QEMU ended: $(tail -n1 "$OUT/source.stderr")"
	done
}

# Wait for dmatest and the device-written buffer on the source, then migrate while they run.
wait_source 'dmatest: Started'
wait_source 'IOASID-DMACHECK started'
start=$(date +%s%N)
# Held in pre-copy: QEMU switches over once what is left to send (its exact figure includes the
# devices' STOP_COPY data size, about 100 bytes each) fits in the bandwidth it assumes for the
# switchover times the downtime limit. 1000 bytes/s for 1 ms is a threshold of 1 byte: never.
log "migrating while dmatest runs (held in pre-copy)"
monitor "migrate_set_parameter avail-switchover-bandwidth 1000B"
monitor "migrate_set_parameter downtime-limit 1"
monitor "migrate -d unix:$RUN/migration.sock"
# The first pass over RAM has been sent when QEMU has synced the dirty log a second time (it
# syncs when the pass has sent every page it knew as dirty).
syncs=0
for _ in $(seq 1 $((5 * TIMEOUT))); do
	sleep 0.2
	monitor "info migrate"
	sleep 0.2
	syncs=$(migrate_field 'dirty sync count'); syncs=${syncs:-0}
	status=$(migrate_field 'Migration status')
	case $status in
	failed|cancelled) die "migration status: $status (logs in $OUT)" ;;
	completed) die "the migration was not held in pre-copy (logs in $OUT)" ;;
	esac
	[ "$syncs" -lt 2 ] || break
done
[ "$syncs" -ge 2 ] || die "the first pass over RAM did not end"
first_pass=$(( ($(date +%s%N) - start) / 1000000 ))
# The device rewrites the buffer about ten more times after the pass sent it, then stops.
sleep 1
monitor "nmi"
wait_source 'IOASID-DMACHECK stopped'
monitor "info migrate"
sleep 0.5
status=$(migrate_field 'Migration status')
held_syncs=$(migrate_field 'dirty sync count')
[ "$status" = active ] || die "the migration was not held in pre-copy until the buffer's last write: $status"
log "the device stopped writing the buffer; letting the migration converge"
monitor "migrate_set_parameter avail-switchover-bandwidth 0"
monitor "migrate_set_parameter downtime-limit 300"
status=""
for _ in $(seq 1 "$TIMEOUT"); do
	sleep 0.5
	monitor "info migrate"
	sleep 0.2
	status=$(migrate_field 'Migration status')
	case $status in completed|failed|cancelled) break ;; esac
done
migration=$(( ($(date +%s%N) - start) / 1000000 ))
monitor "quit"
exec 7>&-
[ "$status" = completed ] || die "migration status: ${status:-none} (logs in $OUT)"

# The destination runs the guest to its end.
waited=0
while kill -0 "$DST_PID" 2>/dev/null && [ "$waited" -lt "$TIMEOUT" ]; do sleep 1; waited=$((waited + 1)); done
DST_PID=""
result=$(sed -n 's/.*\(IOASID-GUEST \(PASS\|FAIL\) .*\)/\1/p' "$OUT/destination.serial" | tail -n1)
stopped=$(sed -n 's/.*\(IOASID-DMACHECK stopped .*\)/\1/p' "$OUT/source.serial" | tail -n1)
check=$(sed -n 's/.*\(IOASID-DMACHECK \(PASS\|FAIL\) .*\)/\1/p' "$OUT/destination.serial" | tail -n1)
source_result=$(sed -n 's/.*\(IOASID-GUEST \(PASS\|FAIL\) .*\)/\1/p' "$OUT/source.serial" | tail -n1)
device=$(sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$OUT/monitor.log" | grep -o 'vfio device transferred: [0-9]* kbytes' | tail -n1 || true)
{
	printf 'migration: completed%s in %d.%d s (QEMU: total time %s ms, downtime %s ms); first pass over RAM sent after %d.%d s; %s dirty-log syncs while held\n' \
		"${device:+ ($device)}" $((migration / 1000)) $((migration % 1000 / 100)) "$(migrate_field 'total time')" \
		"$(migrate_field 'downtime')" $((first_pass / 1000)) $((first_pass % 1000 / 100)) "$held_syncs"
	t=$OUT/source.trace
	printf 'source trace: %d IOMMU_HWPT_SET_DIRTY_TRACKING, %d IOMMU_HWPT_GET_DIRTY_BITMAP, %d reads of the migration data descriptors\n' \
		"$(grep -c ' IOMMU_HWPT_SET_DIRTY_TRACKING ' "$t" || true)" "$(grep -c ' IOMMU_HWPT_GET_DIRTY_BITMAP ' "$t" || true)" \
		"$(grep -c 'vfio-migration:[0-9]* read ' "$t" || true)"
	echo "source:      ${source_result:-no result (migrated away before dmatest ended)}"
	echo "destination: ${result:-NO RESULT}"
	echo "buffer, source:      ${stopped:-no stop line}"
	echo "buffer, destination: ${check:-NO CHECK LINE}"
	echo "whole run: ${SECONDS} s"
} | tee "$OUT/summary.txt"
[ -z "$source_result" ] || die "the source guest finished dmatest before the migration: nothing was migrated in flight"
case $check in "IOASID-DMACHECK PASS "*) ;; *) die "the device-written buffer did not arrive intact on the destination (logs in $OUT)" ;; esac
case $result in "IOASID-GUEST PASS "*) log "passed (logs in $OUT)" ;; *) die "the guest did not pass on the destination (logs in $OUT)" ;; esac
