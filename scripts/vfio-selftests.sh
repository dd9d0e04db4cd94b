#!/bin/bash
# Run the Linux kernel's VFIO selftests (tools/testing/selftests/vfio, seven programs,
# 141 cases) against ioasid's modelled devices: each unmodified program runs under
# `ioasid run --machine SPEC --`, which preloads the interposer so that /dev/iommu,
# /dev/vfio and the device's sysfs folder are ioasid's.
#
# usage: scripts/vfio-selftests.sh [options]
#   --baseline FILE     exit 1 if fewer cases pass than the number in FILE
#   --only NAME         run only this program (repeatable), e.g. --only vfio_pci_device_test
#   --ioasid PATH       the ioasid launcher to use (default: the newest of .build/release
#                       and .build/debug)
#   --config NAME       use (and with --build, build) this swift build configuration
#   --build             run `swift build` first (under `flock $IOASID_BUILD_LOCK` when that
#                       variable names a lock file shared by the machine's builds)
#   --build-only        build the seven programs (into the cache) and exit; the compile is
#                       small, but where builds share a lock run this step under it
#   --iommu NAME        the modelled IOMMU in front of the devices: vtd (default) or smmuv3
#   --machine SPEC      machine for every program but the driver test (default: IOMMU, the `pci`
#                       kind: MSI, MSI-X, FLR and SR-IOV)
#   --ioat-machine SPEC machine for vfio_pci_driver_test (default: IOMMU:ioat, an I/OAT engine)
#   --out DIR           results folder (default: vfio-selftests-results in the repo)
#   --hugepages-1g N    1 GiB huge pages to reserve while the tests run (default 1; 0: leave alone)
#   --hugepages-2m N    2 MiB huge pages to reserve while the tests run (default 16)
#   --timeout SECONDS   limit for each program (default 900); the harness also stops a case
#                       after its own limit (30 s, 60 s for memcpy_storm)
#   --list              print the cases (program, case) of the selected programs and exit
#   --reference FILE    results of the real kernel (default: conformance/vfio-kernel-7.2.tsv)
#   --quiet             do not stream the programs' output, print only the table
#
# Every program gets the first device of its machine as VFIO_SELFTESTS_BDF (from
# `ioasid devices --machine SPEC`, else the first modelled address, 0100:00:01.0). As a
# safeguard the script refuses an address that names a real PCI function of this host.
#
# Results, in the results folder:
#   PROGRAM.log   the program's whole output (TAP 13 with the harness's comments)
#   results.tsv   one line per case: program, case, result (ok, fail or skip), reason
#   summary.txt   the table printed at the end
# A case counts as passed only on a clean `ok` line. A case that never reports (the program
# died, hung, or exited before its harness started) counts as failed; a program that exits
# with status 4 (KSFT_SKIP) before its harness starts has all its cases skipped.
#
# environment: IOASID_LINUX_SRC, IOASID_CACHE (see fetch-linux-source.sh), CC (default gcc),
#   SWIFT_BACKTRACE (default enable=no), IOASID_BUILD_LOCK (see --build)
# exit status: 0 done (and baseline met), 1 baseline not met, 2 could not run
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASELINE=""
ONLY=()
IOASID=""
CONFIG=""
BUILD=0
BUILD_ONLY=0
IOMMU=vtd
MACHINE=""
IOAT_MACHINE=""
OUT=$ROOT/vfio-selftests-results
HUGE_1G=1
HUGE_2M=16
TIMEOUT=900
QUIET=0
LIST=0
REFERENCE=$ROOT/conformance/vfio-kernel-7.2.tsv
START=$(date +%s.%N)

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }
log() { echo "[vfio-selftests] $*" >&2; }
die() { echo "[vfio-selftests] error: $*" >&2; exit 2; }
need_arg() { [ $# -ge 2 ] || die "$1 needs an argument"; }

while [ $# -gt 0 ]; do
	case $1 in
	--baseline) need_arg "$@"; BASELINE=$2; shift 2 ;;
	--only) need_arg "$@"; ONLY+=("$2"); shift 2 ;;
	--ioasid) need_arg "$@"; IOASID=$2; shift 2 ;;
	--config) need_arg "$@"; CONFIG=$2; shift 2 ;;
	--build) BUILD=1; shift ;;
	--build-only) BUILD_ONLY=1; shift ;;
	--iommu) need_arg "$@"; IOMMU=$2; shift 2 ;;
	--machine) need_arg "$@"; MACHINE=$2; shift 2 ;;
	--ioat-machine) need_arg "$@"; IOAT_MACHINE=$2; shift 2 ;;
	--out) need_arg "$@"; OUT=$2; shift 2 ;;
	--hugepages-1g) need_arg "$@"; HUGE_1G=$2; shift 2 ;;
	--hugepages-2m) need_arg "$@"; HUGE_2M=$2; shift 2 ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift 2 ;;
	--quiet) QUIET=1; shift ;;
	--list) LIST=1; shift ;;
	--reference) need_arg "$@"; REFERENCE=$2; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout needs a number of seconds"
[[ $HUGE_1G =~ ^[0-9]+$ && $HUGE_2M =~ ^[0-9]+$ ]] || die "--hugepages-* need a number"
case $IOMMU in vtd|smmuv3) ;; *) die "--iommu must be vtd or smmuv3" ;; esac
MACHINE=${MACHINE:-$IOMMU}
IOAT_MACHINE=${IOAT_MACHINE:-$IOMMU:ioat}
# shellcheck source=scripts/test-runner-common.sh
. "$ROOT/scripts/test-runner-common.sh"
read_baseline

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

# --- 1. build the seven programs from the kernel tree, into a cache folder ------------------
SRC=$("$ROOT/scripts/fetch-linux-source.sh" --quiet | tail -n1) || die "could not fetch the kernel source"
ST=$SRC/tools/testing/selftests
STV=$ST/vfio
[ -f "$STV/Makefile" ] || die "$SRC has no tools/testing/selftests/vfio"
CACHE=${IOASID_CACHE:-$HOME/.cache/ioasid}/vfio-selftests
BIN=$CACHE/bin
CC=${CC:-gcc}
missing=()
command -v "$CC" >/dev/null || missing+=(gcc libc6-dev)
[ -f /usr/include/uuid/uuid.h ] || missing+=(uuid-dev)
[ ${#missing[@]} -eq 0 ] || install_pkgs "${missing[@]}"

# The programs and the library, as the Makefile and lib/libvfio.mk list them (x86_64).
PROGRAMS=($(sed -n 's/^TEST_GEN_PROGS += //p' "$STV/Makefile"))
LIBVFIO=($(sed -n 's/^LIBVFIO_C :*+*= //p' "$STV/lib/libvfio.mk"))
[ ${#PROGRAMS[@]} -gt 0 ] && [ ${#LIBVFIO[@]} -gt 0 ] || die "cannot read the program list from $STV"
if [ ${#ONLY[@]} -gt 0 ]; then
	for o in "${ONLY[@]}"; do
		printf '%s\n' "${PROGRAMS[@]}" | grep -qx "$o" || die "--only $o: not one of ${PROGRAMS[*]}"
	done
	SELECTED=("${ONLY[@]}")
else
	SELECTED=("${PROGRAMS[@]}")
fi

# The uapi headers the programs take from the kernel (`make headers` output, `-isystem
# usr/include` in lib.mk): sanitized copies of the ones newer than the system's, as
# headers_install makes them (no _UAPI guard prefix, no __user/__force/__iomem).
HEADERS="linux/vfio.h linux/iommufd.h linux/stddef.h linux/pci_regs.h linux/idxd.h"
# The 7.2 tree calls calloc_assert() (lib/vfio_pci_device.c) but defines it nowhere; while
# its headers lack it, a one-function shim written here is force-included.
NEED_SHIM=0
grep -rqs 'calloc_assert' "$STV/lib/include" || NEED_SHIM=1

stamp=$BIN/.built
stale=0
for p in "${PROGRAMS[@]}"; do [ -x "$BIN/$p" ] || stale=1; [ -x "$BIN/$p.list" ] || stale=1; done
if [ $stale = 0 ]; then
	[ -n "$(find -L "$STV" "$ST/kselftest.h" "$ST/kselftest_harness.h" "$0" -newer "$stamp" 2>/dev/null | head -n1)" ] && stale=1
	for h in $HEADERS; do [ "$SRC/include/uapi/$h" -nt "$stamp" ] && stale=1; done
fi
if [ $stale = 1 ]; then
	log "building ${#PROGRAMS[@]} VFIO selftests from $STV into $BIN"
	rm -rf "$CACHE/include" "$CACHE/obj" "$BIN"
	mkdir -p "$CACHE/include/linux" "$CACHE/obj" "$BIN" || die "cannot create $CACHE"
	for h in $HEADERS; do
		sed -E -e 's/([[:space:](])(__user|__force|__iomem)[[:space:]]/\1/g' \
			-e 's@#(ifndef|define|endif[[:space:]]*/[*])[[:space:]]*_UAPI@#\1 @' \
			"$SRC/include/uapi/$h" > "$CACHE/include/$h" || die "cannot copy $h"
	done
	# The Makefile's flags: $(KHDR_INCLUDES), lib.mk's -D_GNU_SOURCE= and -I selftests,
	# -I tools/include, -Wall -Werror, libvfio's -I lib/include; -pthread; -luuid.
	CFLAGS=(-isystem "$CACHE/include" -D_GNU_SOURCE= -I"$ST" -I"$SRC/tools/include"
		-I"$STV/lib/include" -Wall -Werror -pthread)
	if [ $NEED_SHIM = 1 ]; then
		cat > "$CACHE/include/calloc_assert_shim.h" <<-'EOF'
		/* Written by scripts/vfio-selftests.sh: the 7.2 VFIO selftest library calls
		 * calloc_assert() without defining it.  Allocate zeroed memory or end the
		 * test as failed (exit status 1, KSFT_FAIL), as its other *_assert helpers do. */
		#include <stdio.h>
		#include <stdlib.h>
		static inline void *calloc_assert(size_t count, size_t size)
		{
			void *memory = calloc(count, size);
			if (memory == NULL) {
				fprintf(stderr, "calloc_assert: cannot allocate %zu x %zu bytes\n", count, size);
				exit(1);
			}
			return memory;
		}
		EOF
		CFLAGS+=(-include "$CACHE/include/calloc_assert_shim.h")
	fi
	LISTER_CFLAGS=()
	for f in "${CFLAGS[@]}"; do [ "$f" = -Werror ] || LISTER_CFLAGS+=("$f"); done
	objs=()
	for c in "${LIBVFIO[@]}"; do
		o=$CACHE/obj/lib/${c%.c}.o
		mkdir -p "$(dirname "$o")"
		"$CC" "${CFLAGS[@]}" -c "$STV/lib/$c" -o "$o" >&2 || die "building lib/$c failed"
		objs+=("$o")
	done
	for p in "${PROGRAMS[@]}"; do
		"$CC" "${CFLAGS[@]}" -c "$STV/$p.c" -o "$CACHE/obj/$p.o" >&2 || die "building $p.c failed"
		"$CC" "${CFLAGS[@]}" "$CACHE/obj/$p.o" "${objs[@]}" -luuid -o "$BIN/$p" >&2 ||
			die "linking $p failed"
		# A twin whose main() only runs the harness, for `-l`: the real main() needs a
		# device (and the SR-IOV test creates a VF) before the harness can list anything.
		printf '#define main vfio_selftest_main\n#include "%s"\n#undef main\nint main(int argc, char *argv[]) { return test_harness_run(argc, argv); }\n' \
			"$STV/$p.c" > "$CACHE/obj/$p.list.c"
		"$CC" "${LISTER_CFLAGS[@]}" "$CACHE/obj/$p.list.c" "${objs[@]}" \
			-luuid -o "$BIN/$p.list" >&2 || die "linking the $p lister failed"
	done
	touch "$stamp"
fi
if [ $BUILD_ONLY = 1 ]; then
	log "built: $(cd "$BIN" && ls -d "${PROGRAMS[@]}" | tr '\n' ' ')in $BIN"
	exit 0
fi

# --- 2. the cases of each program, in run order (`-l` of its lister twin) ------------------------
# `-l` prints per fixture the variants and tests side by side (printf "%-20s %-25s %s");
# each test runs once per variant as FIXTURE[.VARIANT].TEST.
list_cases() {
	"$BIN/$1.list" -l 2>&1 < /dev/null | awk '
	function flush(   i, j) {
		if (fixture == "") return
		if (nv == 0) { nv = 1; vars[1] = "" }
		for (i = 1; i <= nv; i++)
			for (j = 1; j <= nt; j++)
				print fixture (vars[i] == "" ? "" : "." vars[i]) "." tests[j]
		fixture = ""; nv = 0; nt = 0
	}
	/^# FIXTURE/ { next }
	/^-----/ { flush(); next }
	{
		line = $0
		if (line ~ /^[^ ]/) {
			flush()
			fixture = line; sub(/ .*/, "", fixture)
			col = (length(fixture) > 20 ? length(fixture) : 20) + 2
		} else col = 22
		rest = substr(line, col)
		if (rest == "" || rest ~ /^ /) { v = ""; t = substr(rest, 27) }
		else { v = rest; sub(/ .*/, "", v); t = substr(rest, (length(v) > 25 ? length(v) : 25) + 2) }
		gsub(/ /, "", t)
		if (v != "") vars[++nv] = v
		if (t != "") tests[++nt] = t
	}
	END { flush() }'
}

if [ $LIST = 1 ]; then
	for p in "${SELECTED[@]}"; do list_cases "$p" | sed "s/^/$p\t/"; done
	exit 0
fi

# --- 3. the launcher --------------------------------------------------------------------------
if [ -z "$IOASID" ]; then
	if [ $BUILD = 1 ]; then
		command -v swift >/dev/null || die "swift is not on PATH (or pass --ioasid PATH)"
		lock=(); [ -n "${IOASID_BUILD_LOCK:-}" ] && command -v flock >/dev/null && lock=(flock "$IOASID_BUILD_LOCK")
		log "swift build -c ${CONFIG:-debug}"
		(cd "$ROOT" && "${lock[@]}" swift build -c "${CONFIG:-debug}" >&2) || die "swift build failed"
	fi
	if [ -n "$CONFIG" ]; then
		IOASID=$ROOT/.build/$CONFIG/ioasid
	else	# the newest build
		IOASID=$(ls -t "$ROOT"/.build/release/ioasid "$ROOT"/.build/debug/ioasid 2>/dev/null | head -n1)
	fi
fi
[ -n "$IOASID" ] && [ -x "$IOASID" ] || die "no ioasid launcher (build it with swift build, or pass --ioasid/--build)"
export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=no}

# The address of a machine's first device: `ioasid devices` when it has that command,
# else the first modelled address. A real PCI function at that address is refused.
device_address() {
	local bdf
	bdf=$("$IOASID" devices --machine "$1" 2>/dev/null |
		grep -oE '\b[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\b' | head -n1)
	echo "${bdf:-0100:00:01.0}"
}

# --- 4. huge pages for the hugetlb variants of vfio_dma_mapping_test ---------------------------
restore=()
reserve_hugepages() {	# size_kB wanted
	local f=/sys/kernel/mm/hugepages/hugepages-$1kB/nr_hugepages had got
	[ "$2" -gt 0 ] || return 0
	if [ ! -e "$f" ]; then log "no $1 kB huge pages on this kernel: those variants skip"; return 0; fi
	had=$(cat "$f")
	[ "$had" -ge "$2" ] && return 0
	if (echo "$2" > "$f") 2>/dev/null; then
		restore+=("$f:$had")
		got=$(cat "$f")
		[ "$got" -lt "$2" ] && log "only $got of $2 huge pages of $1 kB could be reserved: variants may skip"
	else
		log "could not reserve $2 huge pages of $1 kB (needs root): the hugetlb variants of that size skip"
	fi
	return 0
}
reserve_hugepages 2048 "$HUGE_2M"
reserve_hugepages 1048576 "$HUGE_1G"

kill_leftovers() {	# test processes left running (they run in process groups of their own)
	local exe p pids=()
	exe=$(readlink -f "$1")
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/exe" 2>/dev/null)" = "$exe" ] && pids+=("${p#/proc/}")
	done
	if [ ${#pids[@]} -gt 0 ]; then
		log "killing ${#pids[@]} processes of $(basename "$1") left running"
		kill -KILL "${pids[@]}" 2>/dev/null
	fi
	return 0
}
cleanup() {
	local r
	for r in "${restore[@]}"; do { echo "${r##*:}" > "${r%:*}"; } 2>/dev/null; done
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 5. run each program -------------------------------------------------------------------------
RESULTS=$OUT/results.tsv
: > "$RESULTS"
TABLE=$OUT/.table
: > "$TABLE"
for p in "${SELECTED[@]}"; do
	spec=$MACHINE
	[ "$p" = vfio_pci_driver_test ] && spec=$IOAT_MACHINE
	bdf=$(device_address "$spec")
	if [ -e "/sys/bus/pci/devices/$bdf" ]; then
		die "$bdf is a real PCI function of this host: refusing to run the selftests on it"
	fi
	cases=$OUT/.cases
	list_cases "$p" > "$cases"
	ncases=$(wc -l < "$cases")
	[ "$ncases" -gt 0 ] || die "$p lists no cases"
	plog=$OUT/$p.log
	log "$p: $ncases cases on --machine $spec ($bdf)"
	t0=$(date +%s.%N)
	cmd=(env VFIO_SELFTESTS_BDF="$bdf" timeout -k 10 "$TIMEOUT" "$IOASID" run --machine "$spec" -- "$BIN/$p")
	if [ $QUIET = 1 ]; then
		(cd "$OUT" && exec "${cmd[@]}") < /dev/null > "$plog" 2>&1
		rc=$?
	else
		(cd "$OUT" && exec "${cmd[@]}") < /dev/null 2>&1 | tee "$plog"
		rc=${PIPESTATUS[0]}
	fi
	kill_leftovers "$BIN/$p"
	secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	if [ "$rc" = 124 ]; then how="stopped at the limit of ${TIMEOUT}s"
	elif [ "$rc" -gt 128 ]; then how="killed by signal $((rc - 128))"
	else how="exit status $rc"; fi
	started=0; grep -aq '^1\.\.[1-9]' "$plog" && started=1
	# The program's last words when it ended before its harness started.
	early=$(grep -av '^\[ioasid' "$plog" | grep -a . | tail -n 3 | sed "s|$STV/||g; s/^1\.\.0 # //" | tr '\n\t' '  ' | tr -s ' ' | sed 's/ *$//')
	awk -F'\t' -v prog="$p" -v rc="$rc" -v how="$how" -v started="$started" -v early="$early" -v stv="$STV" '
	function clean(s) { gsub(/[\t\r]/, " ", s); sub(/^ +/, "", s); sub(/ +$/, "", s); return s }
	FILENAME == ARGV[1] { order[++n] = $0; next }
	/^#  RUN +/ { running = $0; sub(/^#  RUN +/, "", running); sub(/ \.\.\.$/, "", running); why = ""; capture = 0; next }
	/^(not )?ok [0-9]+ / {
		line = $0; res = ($0 ~ /^ok/) ? "ok" : "fail"
		sub(/^(not )?ok [0-9]+ /, "", line)
		name = line; sub(/ .*/, "", name)
		directive = ""; if (index(line, " # ")) directive = substr(line, index(line, " # ") + 3)
		reason = ""
		if (directive ~ /^SKIP/) { res = "skip"; reason = directive; sub(/^SKIP */, "", reason) }
		else if (directive != "") { res = "fail"; reason = directive }
		else if (res == "fail") reason = (why == "" ? "failed" : why)
		result[name] = res; because[name] = clean(reason); running = ""; next
	}
	/^# +(OK|FAIL) / { next }
	running != "" {
		d = $0; sub(/^# ?/, "", d); gsub(stv "/", "", d); d = clean(d)
		if (d ~ /: Test terminated by timeout$/) { why = why (why == "" ? "" : " | ") "timeout (harness limit)"; capture = 0 }
		else if (d ~ /: Test terminated unexpectedly by signal [0-9]+$/) { sub(/.*by /, "crashed: ", d); why = why (why == "" ? "" : " | ") d; capture = 0 }
		else if (d ~ /^[A-Za-z0-9_]+: Test (failed|terminated)/) capture = 0
		else if (why == "" && (d ~ /:[0-9]+: (Assertion Failure|FAIL)$/ || d ~ /^[^ ]+:[0-9]+:[^ ]*:/)) { why = d; capture = 1 }
		else if (capture && d != "" && length(why) < 400) why = why " | " d
		next
	}
	END {
		for (i = 1; i <= n; i++) {
			c = order[i]
			if (c in result) { r = result[c]; w = because[c] }
			else if (!started && rc == 4) { r = "skip"; w = "program skipped (exit 4) before its harness: " early }
			else if (c == running) { r = "fail"; w = "never reported: the program ended in it (" how ")" }
			else if (!started) { r = "fail"; w = "not run: the program ended (" how ") before its harness: " early }
			else { r = "fail"; w = "not run: the program ended (" how ")" }
			print prog "\t" c "\t" r "\t" clean(w)
		}
	}' "$cases" "$plog" >> "$RESULTS"
	awk -F'\t' -v prog="$p" -v secs="$secs" -v how="$how" '
		$1 == prog { n++; if ($3 == "ok") ok++; else if ($3 == "skip") sk++; else fl++ }
		END { printf "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", prog, ok, fl, sk, n, secs, how }' "$RESULTS" >> "$TABLE"
done
rm -f "$OUT/.cases"

# --- 6. the table ------------------------------------------------------------------------------------
PASSED=$(awk -F'\t' '$3 == "ok"' "$RESULTS" | wc -l)
WALL=$(awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
{
	echo "launcher:   $IOASID run --machine SPEC (pci: $MACHINE, ioat: $IOAT_MACHINE)"
	echo "programs:   $BIN (source $STV)"
	awk -F'\t' '
		BEGIN { printf "%-32s %5s %5s %5s %6s %8s  %s\n", "program", "pass", "fail", "skip", "cases", "seconds", "ended" }
		{ printf "%-32s %5d %5d %5d %6d %8s  %s\n", $1, $2, $3, $4, $5, $6, $7; p += $2; f += $3; s += $4; n += $5 }
		END { printf "%-32s %5d %5d %5d %6d\n", "total", p, f, s, n }' "$TABLE"
	if [ -f "$REFERENCE" ]; then
		awk -F'\t' -v ref="$REFERENCE" '
			FILENAME == ARGV[1] { kernel[$2] = $3; next }
			($2 in kernel) && kernel[$2] == "ok" { n++; if ($3 == "ok") both++ }
			END { printf "reference:  the real kernel (emulated igb, no IOAT) passes %d of these cases, ioasid %d of those (%s)\n", n, both, ref }' \
			"$REFERENCE" "$RESULTS"
	fi
	echo "results:    $RESULTS"
	echo "wall time:  ${WALL}s"
	awk -F'\t' '{ n++; if ($3 == "ok") p++; else if ($3 == "skip") s++; else f++ }
		END { printf "ioasid vfio selftests: %d passed / %d (%d failed, %d skipped)\n", p, n, f, s }' "$RESULTS"
} | tee "$OUT/summary.txt"
rm -f "$TABLE"

if [ -n "$BASELINE" ]; then
	if [ "$PASSED" -lt "$BASELINE_N" ]; then
		echo "[vfio-selftests] cases that did not pass (program, case, result, reason):" >&2
		awk -F'\t' '$3 != "ok"' "$RESULTS" | head -n 200 | sed 's/^/[vfio-selftests]   /' >&2
		echo "[vfio-selftests] FAIL: $PASSED passed, below the baseline of $BASELINE_N ($BASELINE)" >&2
		exit 1
	fi
	echo "[vfio-selftests] baseline met: $PASSED passed >= $BASELINE_N ($BASELINE)"
	[ "$PASSED" -gt "$BASELINE_N" ] && echo "[vfio-selftests] consider raising $BASELINE to $PASSED"
fi
exit 0
