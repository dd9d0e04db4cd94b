#!/bin/bash
# Boot a Linux guest under an unmodified QEMU 10 that runs inside `ioasid run --machine
# vtd:ioat`, with ioasid's modelled I/OAT DMA engine assigned to the guest through QEMU's
# iommufd backend (vfio-pci). The guest's own ioatdma driver binds the device and dmatest
# copies through it; each boot passes only when the guest reports PASS (at least ITERATIONS
# verified copies, 0 failures, interrupts through MSI-X) within the time limit.
#
# Forms of the command line, one boot each (the device and iommufd named three ways):
#   host      -object iommufd,id=iommufd0 -device vfio-pci,host=BDF,iommufd=iommufd0
#   sysfsdev  -object iommufd,id=iommufd0 -device vfio-pci,sysfsdev=/sys/bus/pci/devices/BDF,iommufd=iommufd0
#   fd        a shell opens the cdev and /dev/iommu and execs QEMU with
#             -object iommufd,id=iommufd0,fd=6 -device vfio-pci,fd=5,iommufd=iommufd0
#   container -device vfio-pci,host=BDF without iommufd: QEMU's legacy VFIO path (group
#             /dev/vfio/N and the /dev/vfio/vfio container, which is iommufd's compat one)
#   viommu    host= behind QEMU's emulated VT-d (-device intel-iommu,caching-mode=on, guest
#             intel_iommu=on): the guest's VT-d driver maps each DMA buffer and QEMU shadows
#             every guest map and unmap into the IOAS (IOMMU_IOAS_MAP/UNMAP, counted from
#             the trace)
#
# usage: scripts/qemu-tests.sh [options]
#   --forms LIST        comma-separated forms to boot (default host,sysfsdev,fd,container,viommu)
#   --iterations N      dmatest copies the guest runs and must verify (default 2000)
#   --timeout SECONDS   limit for each boot (default 300)
#   --baseline-boot     also boot once without ioasid and without the device (timing only)
#   --seabios           boot through QEMU's default firmware (SeaBIOS) instead of qboot
#   --ioasid PATH       the ioasid launcher (default: the newest of .build/release and .build/debug)
#   --out DIR           logs folder (default: qemu-tests-results in the repository)
#   --quiet             print only the result lines
#
# Prerequisites are fetched and built on first use and cached: QEMU by scripts/qemu-setup.sh,
# the guest kernel and initramfs by scripts/guest-build.sh (a few minutes on two cores; run it
# first, under the machine's build lock where builds share one).
#
# In the logs folder: FORM.serial (the guest's console), FORM.stderr (QEMU's and ioasid's
# messages), FORM.trace (the `ioasid run --trace` of the first form and of viommu) and summary.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FORMS=host,sysfsdev,fd,container,viommu
ITERATIONS=2000
TIMEOUT=300
BASELINE=0
FIRMWARE=(-bios qboot.rom)
IOASID=""
OUT=$ROOT/qemu-tests-results
QUIET=0
need_arg() { [ $# -ge 2 ] || { echo "qemu-tests: $1 needs an argument" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
	case $1 in
	--forms) need_arg "$@"; FORMS=$2; shift 2 ;;
	--iterations) need_arg "$@"; ITERATIONS=$2; shift 2 ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift 2 ;;
	--baseline-boot) BASELINE=1; shift ;;
	--seabios) FIRMWARE=(); shift ;;
	--ioasid) need_arg "$@"; IOASID=$2; shift 2 ;;
	--out) need_arg "$@"; OUT=$2; shift 2 ;;
	--quiet) QUIET=1; shift ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "qemu-tests: unknown argument: $1" >&2; exit 2 ;;
	esac
done
log() { [ "$QUIET" = 1 ] || echo "[qemu-tests] $*" >&2; }
die() { echo "[qemu-tests] error: $*" >&2; exit 1; }
[[ $ITERATIONS =~ ^[0-9]+$ ]] && [ "$ITERATIONS" -gt 0 ] || die "--iterations needs a positive number"

. "$ROOT/scripts/qemu-common.sh"
qemu_prepare
BDF=$("$IOASID" devices --machine vtd:ioat | awk '{print $1; exit}')
[ -n "$BDF" ] || die "ioasid devices printed no device"
mkdir -p "$OUT"
rm -f "$OUT"/*.serial "$OUT"/*.stderr "$OUT"/*.trace "$OUT/summary.txt"

# The guest: 512 MiB, the serial console on stdout, power-off ends QEMU. The firmware is qboot
# (shipped with QEMU): it starts the kernel at once, while SeaBIOS spends about 30 s of TCG
# time on a q35 machine before it does; Linux assigns the BARs itself either way.
GUEST_ARGS=(-accel tcg -M q35 "${FIRMWARE[@]}" -m 512 -nographic -no-reboot
	-kernel "$GUEST/bzImage" -initrd "$GUEST/initramfs.cpio"
	-append "console=ttyS0 panic=-1 ioasid.iterations=$ITERATIONS")
# The same with the guest's VT-d driver on, for a QEMU with intel-iommu.
VIOMMU_ARGS=("${GUEST_ARGS[@]}")
VIOMMU_ARGS[${#VIOMMU_ARGS[@]}-1]+=" intel_iommu=on"

# boot NAME COMMAND...: runs it with the limit; the serial log goes to NAME.serial with each
# line's host time since the start; sets RESULT, INIT_S and TOTAL_S.
boot() {
	local name=$1; shift
	local start now rc=0
	start=$(date +%s%N)
	: > "$OUT/$name.serial"
	set +e
	timeout -k 10 "$TIMEOUT" "$@" < /dev/null 2> "$OUT/$name.stderr" |
		while IFS= read -r line; do
			now=$(date +%s%N)
			printf '%d.%03d %s\n' $(( (now - start) / 1000000000 )) $(( (now - start) / 1000000 % 1000 )) "$line"
		done >> "$OUT/$name.serial"
	rc=${PIPESTATUS[0]}
	set -e
	TOTAL_S=$(awk -v ns=$(( $(date +%s%N) - start )) 'BEGIN { printf "%.1f", ns / 1e9 }')
	INIT_S=$(awk '/IOASID-GUEST init/ { printf "%.1f", $1; exit }' "$OUT/$name.serial")
	RESULT=$(sed -n 's/^[0-9.]* .*\(IOASID-GUEST \(PASS\|FAIL\) .*\)/\1/p' "$OUT/$name.serial" | tail -n1)
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then RESULT="TIMEOUT after ${TIMEOUT}s${RESULT:+ ($RESULT)}"
	elif [ -z "$RESULT" ]; then RESULT="NO RESULT (qemu exit $rc): $(grep -v '^$' "$OUT/$name.stderr" | tail -n1)"
	fi
}

failed=0
report() {	# NAME: prints and records one result line; counts failures
	local line
	line=$(printf '%-9s %-6ss to init  %-6ss total  %s' "$1" "${INIT_S:--}" "$TOTAL_S" "$RESULT")
	echo "$line" | tee -a "$OUT/summary.txt"
	case $RESULT in "IOASID-GUEST PASS "*) ;; *) failed=$((failed + 1)) ;; esac
}

if [ "$BASELINE" = 1 ]; then
	log "baseline: QEMU alone, no ioasid, no assigned device"
	boot baseline "$QEMU" "${GUEST_ARGS[@]}"
	printf '%-9s %-6ss to init  %-6ss total  (no device: timing only)\n' baseline "${INIT_S:--}" "$TOTAL_S" | tee -a "$OUT/summary.txt"
fi

IFS=, read -r -a forms <<< "$FORMS"
for form in "${forms[@]}"; do
	trace=()
	{ [ "$form" = "${forms[0]}" ] || [ "$form" = viommu ]; } && trace=(--trace="$OUT/$form.trace")
	run=("$IOASID" run --machine vtd:ioat "${trace[@]}" --)
	case $form in
	host)
		cmd=("${run[@]}" "$QEMU" "${GUEST_ARGS[@]}" -object iommufd,id=iommufd0
			-device "vfio-pci,host=$BDF,iommufd=iommufd0") ;;
	sysfsdev)
		cmd=("${run[@]}" "$QEMU" "${GUEST_ARGS[@]}" -object iommufd,id=iommufd0
			-device "vfio-pci,sysfsdev=/sys/bus/pci/devices/$BDF,iommufd=iommufd0") ;;
	fd)
		cmd=("${run[@]}" /bin/bash -c 'exec 5<>/dev/vfio/devices/vfio0 6<>/dev/iommu && exec "$0" "$@"'
			"$QEMU" "${GUEST_ARGS[@]}" -object iommufd,id=iommufd0,fd=6
			-device vfio-pci,fd=5,iommufd=iommufd0) ;;
	container)
		cmd=("${run[@]}" "$QEMU" "${GUEST_ARGS[@]}" -device "vfio-pci,host=$BDF") ;;
	viommu)
		cmd=("${run[@]}" "$QEMU" "${VIOMMU_ARGS[@]}" -device intel-iommu,caching-mode=on
			-object iommufd,id=iommufd0 -device "vfio-pci,host=$BDF,iommufd=iommufd0") ;;
	*) die "unknown form: $form (host, sysfsdev, fd, container or viommu)" ;;
	esac
	log "$form: ${cmd[*]}"
	boot "$form" "${cmd[@]}"
	report "$form"
	if [ -n "${trace[*]}" ] && [ -f "$OUT/$form.trace" ]; then
		t=$OUT/$form.trace
		maps=$(grep -c ' IOMMU_IOAS_MAP \| VFIO_IOMMU_MAP_DMA ' "$t" || true)
		unmaps=$(grep -c ' IOMMU_IOAS_UNMAP \| VFIO_IOMMU_UNMAP_DMA ' "$t" || true)
		printf '%-9s trace: %d IOAS_MAP, %d IOAS_UNMAP (%s per second of the run), %d SET_IRQS, %d calls in all\n' \
			"$form" "$maps" "$unmaps" "$(awk -v n=$((maps + unmaps)) -v s="$TOTAL_S" 'BEGIN { printf "%.0f", n / s }')" \
			"$(grep -c ' VFIO_DEVICE_SET_IRQS ' "$t" || true)" "$(wc -l < "$t")" | tee -a "$OUT/summary.txt"
	fi
done
[ "$failed" = 0 ] || { echo "qemu-tests: $failed of ${#forms[@]} boots failed (logs in $OUT)" >&2; exit 1; }
log "all ${#forms[@]} boots passed (logs in $OUT)"
