#!/bin/bash
# Run the Linux kernel's own iommufd selftest (tools/testing/selftests/iommu/iommufd.c)
# against ioasid: the unmodified C program runs under `ioasid run --`, which
# preloads the interposer so that its /dev/iommu is ours.
#
# usage: scripts/conformance.sh [options] [-- HARNESS_ARGS...]
#   --baseline FILE     exit 1 if fewer tests pass than the number in FILE
#   --fail-nth          run the kernel's second iommufd selftest, iommufd_fail_nth.c, instead:
#                       it sweeps fail-nth over every injection point of each test, so it runs
#                       under `ioasid run --fault-injection` (results in conformance-results/fail-nth)
#   --filter "ARGS"     kselftest harness selection, passed through to the test
#                       binary (repeatable): -f FIXTURE, -F FIXTURE (exclude),
#                       -v VARIANT, -V VARIANT, -t TEST, -T TEST, -r FIXTURE[.VARIANT].TEST
#                       e.g. --filter "-f iommufd_ioas -T ioas_area_auto_destroy"
#                       (anything after -- is taken the same way)
#   --ioasid PATH       the ioasid launcher to use (default: built by swift build)
#   --config NAME       swift build configuration, release (default) or debug
#   --no-build          do not run swift build; use what is already built
#   --no-preload        run the test binary directly, not under `ioasid run`
#                       (checks this script, or runs against a real /dev/iommu)
#   --launcher "CMD"    run the test binary as CMD SELFTEST ARGS instead of under
#                       `ioasid run --` (e.g. a script that boots a real kernel in a VM)
#   --selftest PATH     use this prebuilt selftest binary instead of building one
#   --out DIR           results folder (default: conformance-results in the repo)
#   --hugepages N       huge pages to reserve while the test runs (default 512, 0: leave alone)
#   --timeout SECONDS   limit for the whole run (default 1800); the harness also
#                       stops any single test after its own limit (30 s by default)
#   --compare FILE      results.tsv to compare with (default: the previous run's)
#   --reference FILE    results of the real kernel (default: conformance/kernel-7.2.tsv)
#   --list              print the names of the selected tests and exit
#   --quiet             do not stream the test output, print only the summary
#
# Results, in the results folder:
#   results.tsv   one line per test: name, result (ok, fail or skip), reason
#   output.log    the test program's whole output (TAP 13 with the harness's comments)
#   summary.txt   the figures printed at the end
# A test counts as passed only on a clean `ok` line (no `# SKIP`, `# XFAIL`, ...).
# A test that crashes, hangs past its limit or never reports counts as failed.
# If the test program itself dies, the run resumes after the test that killed it.
#
# environment: IOASID_LINUX_SRC, IOASID_CACHE (see fetch-linux-source.sh), CC (default gcc),
#   SWIFT_BACKTRACE (default enable=no: crashes are reported by the harness at once)
# exit status: 0 done (and baseline met), 1 baseline not met, 2 could not run
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASELINE=""
IOASID=""
CONFIG=release
BUILD=1
PRELOAD=1
SELFTEST=""
OUT=$ROOT/conformance-results
HUGEPAGES=512
TIMEOUT=1800
COMPARE=""
REFERENCE=$ROOT/conformance/kernel-7.2.tsv
PROGRAM=iommufd
OUT_GIVEN=0
LIST=0
QUIET=0
HARNESS_ARGS=()
LAUNCHER=()
START=$(date +%s.%N)

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }
log() { echo "[conformance] $*" >&2; }
die() { echo "[conformance] error: $*" >&2; exit 2; }
need_arg() { [ $# -ge 2 ] || die "$1 needs an argument"; }

while [ $# -gt 0 ]; do
	case $1 in
	--baseline) need_arg "$@"; BASELINE=$2; shift 2 ;;
	--fail-nth) PROGRAM=iommufd_fail_nth; shift ;;
	--filter) need_arg "$@"; read -r -a f <<< "$2"; HARNESS_ARGS+=("${f[@]}"); shift 2 ;;
	--ioasid) need_arg "$@"; IOASID=$2; shift 2 ;;
	--config) need_arg "$@"; CONFIG=$2; shift 2 ;;
	--no-build) BUILD=0; shift ;;
	--no-preload) PRELOAD=0; shift ;;
	--launcher) need_arg "$@"; read -r -a LAUNCHER <<< "$2"; PRELOAD=0; shift 2 ;;
	--selftest) need_arg "$@"; SELFTEST=$2; shift 2 ;;
	--out) need_arg "$@"; OUT=$2; OUT_GIVEN=1; shift 2 ;;
	--hugepages) need_arg "$@"; HUGEPAGES=$2; shift 2 ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift 2 ;;
	--compare) need_arg "$@"; COMPARE=$2; shift 2 ;;
	--reference) need_arg "$@"; REFERENCE=$2; shift 2 ;;
	--list) LIST=1; shift ;;
	--quiet) QUIET=1; shift ;;
	-h|--help) usage; exit 0 ;;
	--) shift; HARNESS_ARGS+=("$@"); break ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

# The harness's selection options (kselftest_harness.h, test_harness_argv_check):
# each of -f -F -v -V -t -T -r takes a name; -d turns on debug prints.
i=0
while [ $i -lt ${#HARNESS_ARGS[@]} ]; do
	case ${HARNESS_ARGS[$i]} in
	-[fFvVtTr]) [ $((i + 1)) -lt ${#HARNESS_ARGS[@]} ] || die "filter ${HARNESS_ARGS[$i]} needs a name"
		i=$((i + 2)) ;;
	-d) i=$((i + 1)) ;;
	*) die "unsupported harness argument: ${HARNESS_ARGS[$i]} (use -f/-F/-v/-V/-t/-T/-r NAME or -d)" ;;
	esac
done
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout needs a number of seconds"
[[ $HUGEPAGES =~ ^[0-9]+$ ]] || die "--hugepages needs a number"
# shellcheck source=scripts/test-runner-common.sh
. "$ROOT/scripts/test-runner-common.sh"
read_baseline
if [ $PROGRAM = iommufd_fail_nth ]; then
	[ $OUT_GIVEN = 1 ] || OUT=$ROOT/conformance-results/fail-nth
	REFERENCE=""   # no recorded kernel results for this program
fi

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
BUILD_DIR=$OUT/build

# --- 1. the selftest binary ------------------------------------------------------
if [ -z "$SELFTEST" ]; then
	SRC=$("$ROOT/scripts/fetch-linux-source.sh" | tail -n1) || die "could not fetch the kernel source"
	ST=$SRC/tools/testing/selftests
	CC=${CC:-gcc}
	missing=()
	command -v "$CC" >/dev/null || missing+=(gcc libc6-dev)
	[ -f /usr/include/sys/capability.h ] || missing+=(libcap-dev)
	[ ${#missing[@]} -eq 0 ] || install_pkgs "${missing[@]}"
	SELFTEST=$BUILD_DIR/$PROGRAM
	# Sanitized copies of the uapi headers the test needs that are newer than
	# the system's (what `make headers_install` does to them, for these files):
	# drop the _UAPI guard prefix and the __user/__force/__iomem annotations.
	HEADERS="linux/iommufd.h linux/vfio.h linux/stddef.h"
	stale=0
	[ -x "$SELFTEST" ] || stale=1
	for f in "$ST/iommu/$PROGRAM.c" "$ST/iommu/iommufd_utils.h" "$ST/kselftest_harness.h" \
		 "$ST/kselftest.h" "$SRC/drivers/iommu/iommufd/iommufd_test.h" "$0" \
		 $(for h in $HEADERS; do echo "$SRC/include/uapi/$h"; done); do
		[ "$f" -nt "$SELFTEST" ] && stale=1
	done
	if [ $stale = 1 ]; then
		log "building the $PROGRAM selftest from $SRC"
		rm -rf "$BUILD_DIR/include"
		mkdir -p "$BUILD_DIR/include/linux"
		for h in $HEADERS; do
			sed -E -e 's/([[:space:](])(__user|__force|__iomem)[[:space:]]/\1/g' \
				-e 's@#(ifndef|define|endif[[:space:]]*/[*])[[:space:]]*_UAPI@#\1 @' \
				"$SRC/include/uapi/$h" > "$BUILD_DIR/include/$h" || die "cannot copy $h"
		done
		# As tools/testing/selftests/lib.mk and iommu/Makefile build it.
		"$CC" -D_GNU_SOURCE= -Wall -O2 -Wno-unused-function \
			-isystem "$BUILD_DIR/include" -I"$ST" \
			-o "$SELFTEST.tmp" "$ST/iommu/$PROGRAM.c" -lcap >&2 ||
			die "building the selftest failed"
		mv "$SELFTEST.tmp" "$SELFTEST"
	fi
fi
[ -x "$SELFTEST" ] || die "no selftest binary: $SELFTEST"

# --- 2. the names of the selected tests, in run order ---------------------------------
# `-l` prints, per fixture, the variants and the tests side by side (printf
# "%-20s %-25s %s"); each test runs once per variant as FIXTURE[.VARIANT].TEST.
# The selection is test_enabled() of the harness: the first option that
# matches decides; with no match a test runs only if no option was positive.
list_tests() {
	"$SELFTEST" -l 2>&1 < /dev/null | awk -v filter="${HARNESS_ARGS[*]:-}" '
	function flush(   i, j, name) {
		if (fixture == "") return
		if (nv == 0) { nv = 1; vars[1] = "" }
		for (i = 1; i <= nv; i++)
			for (j = 1; j <= nt; j++) {
				name = fixture (vars[i] == "" ? "" : "." vars[i]) "." tests[j]
				if (enabled(fixture, vars[i], tests[j], name)) print name
			}
		fixture = ""; nv = 0; nt = 0
	}
	function enabled(f, v, t, name,   i, o, a, positive) {
		for (i = 1; i <= nopt; i++) {
			o = opt[i]; a = arg[i]
			if (o == "d") continue
			if (o ~ /[a-z]/) positive = 1
			if (tolower(o) == "t" && a == t) return o ~ /[a-z]/
			if (tolower(o) == "f" && a == f) return o ~ /[a-z]/
			if (tolower(o) == "v" && a == v) return o ~ /[a-z]/
			if (o == "r" && a == name) return 1
		}
		return !positive
	}
	BEGIN {
		n = split(filter, w, " ")
		for (i = 1; i <= n; i++) {
			if (w[i] == "-d") { opt[++nopt] = "d"; continue }
			opt[++nopt] = substr(w[i], 2); arg[nopt] = w[++i]
		}
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
EXPECTED=$OUT/expected.txt
list_tests > "$EXPECTED"
TOTAL=$(wc -l < "$EXPECTED")
[ "$TOTAL" -gt 0 ] || die "no test selected (or '$SELFTEST -l' failed)"
if [ $LIST = 1 ]; then cat "$EXPECTED"; exit 0; fi

# --- 3. the launcher --------------------------------------------------------------------
RUNNER=("${LAUNCHER[@]}")
if [ $PRELOAD = 1 ]; then
	if [ -z "$IOASID" ]; then
		command -v swift >/dev/null || die "swift is not on PATH (or pass --ioasid PATH)"
		if [ $BUILD = 1 ]; then
			log "swift build -c $CONFIG"
			(cd "$ROOT" && swift build -c "$CONFIG" >&2) || die "swift build -c $CONFIG failed"
		fi
		IOASID=$(cd "$ROOT" && swift build -c "$CONFIG" --show-bin-path)/ioasid
	fi
	[ -x "$IOASID" ] || die "no ioasid launcher at $IOASID"
	# The selftest expects root in a VM (CAP_SYS_RESOURCE for IOMMU_OPTION_RLIMIT_MODE).
	RUNNER=("$IOASID" run --privileged --)
	[ $PROGRAM = iommufd_fail_nth ] && RUNNER=("$IOASID" run --privileged --fault-injection --)
fi

# The Swift runtime's crash backtracer hangs in a crashed test process until the
# harness's 30 s limit kills it, so crashes are left to the harness (which
# reports the signal) unless SWIFT_BACKTRACE is set by the caller.
export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=no}

# --- 4. huge pages for the *_hugepage variants ---------------------------------------------
NR=/proc/sys/vm/nr_hugepages
restore_hugepages=""
if [ "$HUGEPAGES" -gt 0 ] && [ -r $NR ]; then
	had=$(cat $NR)
	if [ "$had" -lt "$HUGEPAGES" ]; then
		if (echo "$HUGEPAGES" > $NR) 2>/dev/null; then
			restore_hugepages=$had
			got=$(cat $NR)
			[ "$got" -lt "$HUGEPAGES" ] && log "only $got of $HUGEPAGES huge pages could be reserved"
		else
			log "could not reserve $HUGEPAGES huge pages (needs root and a writable $NR):" \
			    "the hugepage variants may fail"
		fi
	fi
fi
# Tests run in process groups of their own, so a test left running when its
# harness was stopped (time limit, crash) is found by its executable and killed.
kill_leftovers() {
	local exe p pids=()
	exe=$(readlink -f "$SELFTEST")
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/exe" 2>/dev/null)" = "$exe" ] && pids+=("${p#/proc/}")
	done
	if [ ${#pids[@]} -gt 0 ]; then
		log "killing ${#pids[@]} test processes left running: ${pids[*]}"
		kill -KILL "${pids[@]}" 2>/dev/null
	fi
	return 0
}
cleanup() {
	kill_leftovers
	[ -n "$restore_hugepages" ] && { echo "$restore_hugepages" > $NR; } 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 5. run, resuming after a crash of the test program itself -----------------------------
LOG=$OUT/output.log
RESULTS=$OUT/results.tsv
[ -f "$RESULTS" ] && mv "$RESULTS" "$OUT/results.prev.tsv"
[ -z "$COMPARE" ] && [ -f "$OUT/results.prev.tsv" ] && COMPARE=$OUT/results.prev.tsv
: > "$LOG"
DONE=$OUT/.done.tsv
: > "$DONE"
TOTALS=()

# Turn one attempt's output into "name<TAB>result<TAB>reason" lines, and a last
# line "@running<TAB>name" for a test that started but never reported.
parse_attempt() {
	awk '
	function clean(s) { gsub(/[\t\r]/, " ", s); sub(/^ +/, "", s); sub(/ +$/, "", s); return s }
	function shortpath(s) { sub(/^[^ :]*\//, "", s); return s }
	/^#  RUN +/ {
		running = $0; sub(/^#  RUN +/, "", running); sub(/ \.\.\.$/, "", running)
		first = ""; assert = ""; ending = ""; next
	}
	/^(not )?ok [0-9]+ / {
		line = $0; res = ($0 ~ /^ok/) ? "ok" : "fail"
		sub(/^(not )?ok [0-9]+ /, "", line)
		name = line; sub(/ .*/, "", name)
		directive = ""
		if (index(line, " # ")) { directive = substr(line, index(line, " # ") + 3) }
		reason = ""
		if (directive ~ /^SKIP/) { res = "skip"; reason = directive; sub(/^SKIP */, "", reason) }
		else if (directive ~ /^(XFAIL|XPASS|TODO)/) { res = "fail"; reason = directive }
		else if (res == "fail") {
			reason = ending
			if (assert != "") reason = reason (reason == "" ? "" : ": ") assert
			else if (first != "" && first != ending) reason = reason (reason == "" ? "" : ": ") first
			if (directive != "") reason = reason (reason == "" ? "" : "; ") directive
			if (reason == "") reason = "failed"
		}
		print name "\t" res "\t" clean(reason)
		running = ""; next
	}
	/^# Totals:/ || /^TAP version/ || /^1\.\./ || /^# Starting [0-9]+ tests/ || /^# (PASSED|FAILED): / { next }
	/^# +(OK|FAIL) / { next }
	running != "" {
		d = $0; sub(/^# ?/, "", d)
		if (d ~ /: Test terminated by timeout$/) ending = "timeout (harness limit)"
		else if (d ~ /: Test terminated by assertion$/) ending = "assertion"
		else if (d ~ /: Test terminated unexpectedly by signal [0-9]+$/) { ending = d; sub(/.*by /, "crashed: ", ending) }
		else if (d ~ /: Test failed$/) ending = "failed"
		else if (d ~ /: Test (exited normally instead of by signal|ended in some other way)/) { ending = d; sub(/^[^:]*: /, "", ending) }
		else if (assert == "" && d ~ /^[^ ]+:[0-9]+:[^: ]*:/) {
			# file:line:test:message -> file:line: message
			assert = shortpath(d); split(assert, a, ":")
			assert = a[1] ":" a[2] ": " substr(assert, length(a[1] a[2] a[3]) + 4)
		}
		else if (first == "" && d != "") first = d
	}
	END { if (running != "") print "@running\t" running }'
}

deadline=$(( $(date +%s) + TIMEOUT ))
attempt=0
abnormal=""
while :; do
	# Tests still to run, in order.
	REMAINING=$OUT/.remaining.txt
	awk -F'\t' 'FILENAME == ARGV[1] { done[$1] = 1; next } !($0 in done)' "$DONE" "$EXPECTED" > "$REMAINING"
	[ -s "$REMAINING" ] || break
	attempt=$((attempt + 1))
	left=$(( deadline - $(date +%s) ))
	if [ $left -le 0 ]; then abnormal="time limit of ${TIMEOUT}s reached"; break; fi
	if [ $attempt = 1 ]; then
		args=("${HARNESS_ARGS[@]}")
	else
		args=(); while read -r n; do args+=(-r "$n"); done < "$REMAINING"
		log "resuming with the $(wc -l < "$REMAINING") tests not yet run"
		echo "# [conformance] attempt $attempt: resuming with $(wc -l < "$REMAINING") tests" >> "$LOG"
	fi
	ATTEMPT_LOG=$OUT/.attempt.log
	t0=$(date +%s.%N)
	# The harness forks each test and puts it in its own process group; the
	# whole run gets `timeout` (SIGTERM, then SIGKILL 10 s later).
	if [ $QUIET = 1 ]; then
		(cd "$OUT" && exec timeout -k 10 "$left" "${RUNNER[@]}" "$SELFTEST" "${args[@]}") < /dev/null > "$ATTEMPT_LOG" 2>&1
		rc=$?
	else
		(cd "$OUT" && exec timeout -k 10 "$left" "${RUNNER[@]}" "$SELFTEST" "${args[@]}") < /dev/null 2>&1 | tee "$ATTEMPT_LOG"
		rc=${PIPESTATUS[0]}
	fi
	kill_leftovers
	RUN_SECONDS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	cat "$ATTEMPT_LOG" >> "$LOG"
	plan=$(grep -a -m1 '^1\.\.[0-9]*$' "$ATTEMPT_LOG" | cut -c4-)
	if [ $attempt = 1 ] && [ -n "$plan" ] && [ "$plan" != "$TOTAL" ]; then
		log "warning: the test program planned $plan tests but '-l' listed $TOTAL"
	fi
	totals=$(grep -a '^# Totals:' "$ATTEMPT_LOG" | tail -n1)
	[ -n "$totals" ] && TOTALS+=("$totals")
	parsed=$(parse_attempt < "$ATTEMPT_LOG")
	running=$(printf '%s\n' "$parsed" | sed -n 's/^@running\t//p')
	before=$(wc -l < "$DONE")
	# Keep only results for selected tests not already recorded.
	printf '%s\n' "$parsed" | grep -v '^@running' | awk -F'\t' '
		FILENAME == ARGV[1] { want[$0] = 1; next }
		FILENAME == ARGV[2] { done[$1] = 1; next }
		NF >= 2 && ($1 in want) && !($1 in done) { print; done[$1] = 1 }' "$EXPECTED" "$DONE" - >> "$DONE"
	after=$(wc -l < "$DONE")
	if [ "$rc" -gt 128 ]; then how="killed by signal $((rc - 128))"; else how="exit status $rc"; fi
	if [ "$rc" = 124 ] || { [ "$rc" -gt 128 ] && [ $(( deadline - $(date +%s) )) -le 0 ]; }; then
		how="stopped at the time limit of ${TIMEOUT}s"
		[ -n "$running" ] && printf '%s\tfail\t%s\n' "$running" "not finished: the whole run was $how" >> "$DONE"
		abnormal="the test program was $how"
		break
	fi
	if [ -n "$running" ] && ! grep -q "^$running	" "$DONE"; then
		# It started but never reported: the test program itself died in it.
		printf '%s\tfail\t%s\n' "$running" "crashed the test program ($how)" >> "$DONE"
		log "$running: the test program died in it ($how)"
		continue
	fi
	[ "$after" -gt "$before" ] && continue
	# No progress at all: it died before starting any test.
	abnormal="the test program ended ($how) before running the tests left"
	[ -z "$totals" ] && tail -n 5 "$ATTEMPT_LOG" | sed 's/^/[conformance]   | /' >&2
	break
done
rm -f "$OUT/.attempt.log" "$OUT/.remaining.txt"

# Everything selected but never reported is a failure.
awk -F'\t' -v why="${abnormal:-never reported}" '
	FILENAME == ARGV[1] { r[$1] = $0; next }
	{ if ($0 in r) print r[$0]; else print $0 "\tfail\tnot run: " why }' "$DONE" "$EXPECTED" > "$RESULTS"
rm -f "$DONE"

# --- 6. figures ------------------------------------------------------------------------------
PASSED=$(awk -F'\t' '$2 == "ok"' "$RESULTS" | wc -l)
FAILED=$(awk -F'\t' '$2 == "fail"' "$RESULTS" | wc -l)
SKIPPED=$(awk -F'\t' '$2 == "skip"' "$RESULTS" | wc -l)
NOTRUN=$(awk -F'\t' '$3 ~ /^not run/' "$RESULTS" | wc -l)
WALL=$(awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
{
	echo "selftest:   $SELFTEST${SRC:+ (source $SRC)}"
	echo "launcher:   ${RUNNER[*]:-(none: run directly)}"
	[ ${#HARNESS_ARGS[@]} -gt 0 ] && echo "selection:  ${HARNESS_ARGS[*]}"
	if [ ${#TOTALS[@]} -gt 0 ]; then
		for t in "${TOTALS[@]}"; do echo "kselftest:  $t"; done
	else
		echo "kselftest:  (no totals line: the test program did not finish)"
	fi
	[ "$attempt" -gt 1 ] && echo "attempts:   $attempt (the test program died and the run was resumed)"
	[ -n "$abnormal" ] && echo "note:       $abnormal"
	if [ -n "$COMPARE" ] && [ -f "$COMPARE" ]; then
		awk -F'\t' -v FILENAME_OLD="$COMPARE" '
			FILENAME == ARGV[1] { old[$1] = $2; next }
			($1 in old) && old[$1] != "ok" && $2 == "ok" { up++; ups = ups "\n            + " $1 }
			($1 in old) && old[$1] == "ok" && $2 != "ok" { down++; downs = downs "\n            - " $1 " (" $2 ")" }
			END {
				printf "compared:   with %s: %d newly passing, %d no longer passing", FILENAME_OLD, up, down
				if (down > 0) printf "%s", downs
				if (up > 0 && up <= 20) printf "%s", ups
				printf "\n"
			}' "$COMPARE" "$RESULTS"
	fi
	if [ -f "$REFERENCE" ]; then
		awk -F'\t' -v ref="$REFERENCE" '
			FILENAME == ARGV[1] { kernel[$1] = $2; next }
			($1 in kernel) && kernel[$1] == "ok" { n++; if ($2 == "ok") both++ }
			END { printf "reference:  the real kernel passes %d of these tests, ioasid %d of those (%s)\n", n, both, ref }' \
			"$REFERENCE" "$RESULTS"
	fi
	echo "results:    $RESULTS"
	echo "wall time:  ${WALL}s (last test program run ${RUN_SECONDS:-0}s)"
	notrun=""; [ "$NOTRUN" -gt 0 ] && notrun=", $NOTRUN of them never ran"
	[ $PROGRAM = iommufd_fail_nth ] && echo "ioasid fail_nth: $PASSED passed / $TOTAL ($FAILED failed, $SKIPPED skipped)"
	echo "ioasid conformance: $PASSED passed / $TOTAL ($FAILED failed$notrun, $SKIPPED skipped)"
} | tee "$OUT/summary.txt"

if [ -n "$BASELINE" ]; then
	if [ "$PASSED" -lt "$BASELINE_N" ]; then
		echo "[conformance] tests that did not pass (name, result, reason):" >&2
		awk -F'\t' '$2 != "ok"' "$RESULTS" | head -n 300 | sed 's/^/[conformance]   /' >&2
		echo "[conformance] FAIL: $PASSED passed, below the baseline of $BASELINE_N ($BASELINE)" >&2
		exit 1
	fi
	echo "[conformance] baseline met: $PASSED passed >= $BASELINE_N ($BASELINE)"
	[ "$PASSED" -gt "$BASELINE_N" ] && echo "[conformance] consider raising $BASELINE to $PASSED"
fi
exit 0
