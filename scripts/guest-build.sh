#!/bin/bash
# Build the QEMU guest that drives ioasid's I/OAT model: a small Linux kernel
# (x86_64, from tinyconfig plus what the guest needs: PCI with MSI-X, the 8250
# serial console, devtmpfs, an uncompressed initramfs, the I/OAT DMA engine driver
# and dmatest built in, the Intel IOMMU driver for guests with a vIOMMU, loadable
# modules), the project's own guest module scripts/guest/ioasid_dmacheck.c built
# against that kernel (the migration test's device-written buffer), and a busybox
# initramfs whose /init runs dmatest on the I/OAT channel, prints one summary line
# and powers off.
#
# Everything goes to a cache folder; nothing of the kernel enters the repository.
# Re-running only rebuilds what is missing or out of date.  The kernel source is
# the one scripts/fetch-linux-source.sh --full provides.
#
# usage: scripts/guest-build.sh [--quiet]
#   Prints the guest folder (bzImage, initramfs.cpio) as the last line on stdout.
#
# environment:
#   IOASID_GUEST_CACHE  cache folder (default ~/.cache/ioasid-guest)
#   IOASID_LINUX_SRC    an extracted Linux tree to build from (else fetched)
#   JOBS                make -j value (default 2); the build runs under nice -n 19
#
# What /init does (guest side, all on ttyS0):
#   mounts proc, sysfs, devtmpfs; waits for a PCI function bound to ioatdma and a
#   DMA channel in /sys/class/dma; runs dmatest on that channel
#   (iterations = ioasid.iterations=N on the kernel command line, default 2000);
#   reads dmatest's "summary" line from the kernel log and the channel's MSI-X
#   interrupt count from /proc/interrupts, and prints
#     IOASID-GUEST PASS|FAIL tests=N failures=N msix=N chan=NAME dmacheck=RESULT
#   then powers off.  PASS needs tests >= iterations, 0 failures and at least one
#   MSI-X interrupt of ioatdma.
#   With ioasid.dmacheck=1 on the command line it waits for a second DMA channel
#   and, once dmatest has started on the first, loads ioasid_dmacheck on the second
#   (the device rewrites a 4 MiB buffer every 100 ms until an NMI stops it); after
#   dmatest it asks the module to verify the buffer (the module prints
#   "IOASID-DMACHECK PASS|FAIL ...") and PASS also needs dmacheck=PASS.  Without it
#   dmacheck=off.
set -euo pipefail

CACHE=${IOASID_GUEST_CACHE:-$HOME/.cache/ioasid-guest}
KB=$CACHE/kbuild
JOBS=${JOBS:-2}
QUIET=0
for a in "$@"; do
	case $a in
	--quiet) QUIET=1 ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "guest-build: unknown argument: $a" >&2; exit 2 ;;
	esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { [ "$QUIET" = 1 ] || echo "[guest-build] $*" >&2; }
die() { echo "[guest-build] error: $*" >&2; exit 1; }

# --- 0. host tools ------------------------------------------------------------------
need=()
for t in gcc make flex bison bc cpio lz4; do command -v $t >/dev/null || need+=($t); done
[ -f /usr/include/libelf.h ] || need+=(libelf-dev)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx sh || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
	pkgs="${need[*]}"
	log "installing: $pkgs"
	as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
	as_root apt-get update -qq
	DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $pkgs < /dev/null
fi

# --- 1. kernel source ---------------------------------------------------------------
SRC=${IOASID_LINUX_SRC:-}
if [ -z "$SRC" ] || [ ! -f "$SRC/Makefile" ]; then
	SRC=$("$HERE/fetch-linux-source.sh" --full --quiet | tail -n1)
fi
[ -f "$SRC/Makefile" ] && [ -d "$SRC/arch/x86" ] || die "no full kernel tree at $SRC"

# --- 2. config: tinyconfig + the guest's needs ----------------------------------------
# Basics of a serial/initramfs guest; PCI with MSI(-X) and ACPI (q35's MCFG and
# interrupt routing); the I/OAT driver and dmatest built in (their parameters
# then live in /sys/module/dmatest/parameters); the VT-d driver with interrupt
# remapping for guests behind QEMU's intel-iommu (idle without a DMAR table);
# loadable modules (unsigned, unversioned) for the project's guest module.
# The bzImage is LZ4-compressed: unpacking tinyconfig's XZ takes about half a
# minute under TCG, LZ4 a fraction of a second.
OPTS_Y="64BIT SMP PRINTK PRINTK_TIME BUG TTY SERIAL_8250 SERIAL_8250_CONSOLE
 BLK_DEV_INITRD BINFMT_ELF BINFMT_SCRIPT PROC_FS SYSFS DEVTMPFS DEVTMPFS_MOUNT TMPFS SHMEM
 MULTIUSER FUTEX EPOLL POSIX_TIMERS ACPI PCI PCI_MSI PCIEPORTBUS
 X86_LOCAL_APIC X86_IO_APIC X86_X2APIC IRQ_REMAP
 IOMMU_SUPPORT INTEL_IOMMU DMAR_TABLE
 DMADEVICES DMA_ENGINE INTEL_IOATDMA DMATEST KERNEL_LZ4 MODULES"
OPTS_N="KERNEL_XZ SLUB_TINY RD_GZIP RD_BZIP2 RD_LZMA RD_XZ RD_LZO RD_LZ4 RD_ZSTD INTEL_IOMMU_DEFAULT_ON
 INTEL_IOMMU_SCALABLE_MODE_DEFAULT_ON MODULE_SIG MODVERSIONS TRIM_UNUSED_KSYMS"
mkdir -p "$KB"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s -C "$SRC" O="$tmp" tinyconfig >/dev/null
args=()
for o in $OPTS_Y; do args+=(-e "$o"); done
for o in $OPTS_N; do args+=(-d "$o"); done
"$SRC/scripts/config" --file "$tmp/.config" "${args[@]}"
make -s -C "$SRC" O="$tmp" olddefconfig >/dev/null
for o in PCI PCI_MSI SERIAL_8250_CONSOLE DEVTMPFS BLK_DEV_INITRD INTEL_IOATDMA DMATEST INTEL_IOMMU MODULES; do
	grep -qx "CONFIG_$o=y" "$tmp/.config" || die "CONFIG_$o did not come out =y"
done
if ! cmp -s "$tmp/.config" "$KB/.config"; then
	log "writing new kernel config"
	cp "$tmp/.config" "$KB/.config"
fi

# --- 3. kernel ---------------------------------------------------------------------------
# `modules` adds Module.symvers (the kernel's exported symbols; nothing is built as a
# module), which the external module build below links against. The build folder is kept:
# it is also what an external module needs.
start=$(date +%s)
log "building bzImage (nice -n 19 make -j$JOBS) from $SRC"
nice -n 19 make -s -C "$SRC" O="$KB" -j"$JOBS" bzImage modules
if ! cmp -s "$KB/arch/x86/boot/bzImage" "$CACHE/bzImage"; then
	cp "$KB/arch/x86/boot/bzImage" "$CACHE/bzImage"
	log "kernel built in $(( $(date +%s) - start ))s"
fi

# --- 3b. the project's guest module --------------------------------------------------------
# Built out of tree in the cache (a copy of the source and a one-line Kbuild), so the
# repository stays clean.
MOD=$CACHE/dmacheck
mkdir -p "$MOD"
cmp -s "$HERE/guest/ioasid_dmacheck.c" "$MOD/ioasid_dmacheck.c" || cp "$HERE/guest/ioasid_dmacheck.c" "$MOD/ioasid_dmacheck.c"
echo 'obj-m := ioasid_dmacheck.o' > "$tmp/Kbuild"
cmp -s "$tmp/Kbuild" "$MOD/Kbuild" || cp "$tmp/Kbuild" "$MOD/Kbuild"
nice -n 19 make -s -C "$KB" M="$MOD" modules
[ -f "$MOD/ioasid_dmacheck.ko" ] || die "the guest module did not build"

# --- 4. initramfs --------------------------------------------------------------------------
IR=$tmp/initramfs
mkdir -p "$IR"/{bin,dev,proc,sys,tmp,lib/modules}
cp /bin/busybox "$IR/bin/busybox"
cp "$MOD/ioasid_dmacheck.ko" "$IR/lib/modules/"
for a in $("$IR/bin/busybox" --list); do
	[ -e "$IR/bin/$a" ] || ln -s busybox "$IR/bin/$a"
done
cat > "$IR/init" <<'INIT'
#!/bin/sh
# ioasid guest: dmatest on the I/OAT channel (and, with ioasid.dmacheck=1, the migration
# test's device-written buffer on a second one), one summary line, power off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "IOASID-GUEST init uptime=$(cut -d' ' -f1 /proc/uptime)"
iterations=2000
dmacheck=0
for w in $(cat /proc/cmdline); do
	case $w in
	ioasid.iterations=*) iterations=${w#ioasid.iterations=} ;;
	ioasid.dmacheck=*) dmacheck=${w#ioasid.dmacheck=} ;;
	esac
done
channels=1
[ "$dmacheck" = 1 ] && channels=2
finish() {
	echo "$1"
	sync
	poweroff -f
	sleep 5
}
# The driver probes at boot (built in); give it a moment if it is late.
bdf=
for i in $(seq 1 50); do
	bdf=$(ls /sys/bus/pci/drivers/ioatdma 2>/dev/null | grep : | head -n1)
	chan=$(ls /sys/class/dma 2>/dev/null | head -n1)
	[ -n "$bdf" ] && [ "$(ls /sys/class/dma 2>/dev/null | wc -l)" -ge "$channels" ] && break
	sleep 0.2
done
lspci -nn 2>/dev/null || for d in /sys/bus/pci/devices/*; do echo "$d $(cat $d/vendor):$(cat $d/device)"; done
[ -n "$bdf" ] || finish "IOASID-GUEST FAIL tests=0 failures=0 msix=0 chan=none (ioatdma bound nothing)"
[ -n "$chan" ] || finish "IOASID-GUEST FAIL tests=0 failures=0 msix=0 chan=none (no DMA channel)"
echo "IOASID-GUEST ioatdma on $bdf, channel $chan, $iterations iterations"
P=/sys/module/dmatest/parameters
echo "$iterations" > $P/iterations
echo 1 > $P/threads_per_chan
echo "$chan" > $P/channel
echo 1 > $P/run
# The migration test's device-written buffer, on the second channel (dmatest has the first).
check=off
if [ "$dmacheck" = 1 ]; then
	chan2=$(ls /sys/class/dma | sed -n 2p)
	check=FAIL
	[ -n "$chan2" ] && insmod /lib/modules/ioasid_dmacheck.ko channel="$chan2" || echo "IOASID-DMACHECK FAIL not loaded (channel ${chan2:-none})"
fi
cat $P/wait > /dev/null
echo "IOASID-GUEST dmatest done uptime=$(cut -d' ' -f1 /proc/uptime)"
D=/sys/module/ioasid_dmacheck/parameters
if [ "$dmacheck" = 1 ] && [ -d $D ]; then
	echo 1 > $D/verify
	check=$(cat $D/result)
fi
dmesg | grep -E 'dmatest|ioatdma' | tail -n 20
line=$(dmesg | grep "dmatest: $chan-copy0: summary" | tail -n1)
tests=$(echo "$line" | sed -n 's/.*summary \([0-9]*\) tests.*/\1/p')
failures=$(echo "$line" | sed -n 's/.* \([0-9]*\) failures.*/\1/p')
grep -i -E 'ioat|msix' /proc/interrupts
# MSI-X interrupts of ioatdma: the per-CPU counts on its /proc/interrupts lines.
msix=$(grep -i 'ioat-msix' /proc/interrupts | awk '{ n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break; s += n } END { print s + 0 }')
tests=${tests:-0}; failures=${failures:-0}
verdict=FAIL
[ "$tests" -ge "$iterations" ] && [ "$failures" = 0 ] && [ "$msix" -gt 0 ] && [ "$check" != FAIL ] && verdict=PASS
finish "IOASID-GUEST $verdict tests=$tests failures=$failures msix=$msix chan=$chan dmacheck=$check summary: ${line#*] }"
INIT
chmod +x "$IR/init"
(cd "$IR" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$tmp/initramfs.cpio"
cmp -s "$tmp/initramfs.cpio" "$CACHE/initramfs.cpio" || cp "$tmp/initramfs.cpio" "$CACHE/initramfs.cpio"
log "guest ready: $CACHE/bzImage $CACHE/initramfs.cpio"
echo "$CACHE"
