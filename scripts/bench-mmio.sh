#!/bin/bash
# The trapped-MMIO benchmark program (Sources/ioasid-benchmark, TrappedMMIOBench.swift), compiled
# at run time with cc.
#
# usage: scripts/bench-mmio.sh build [OUTDIR]
#          builds OUTDIR/mmiobench and prints its path
#        scripts/bench-mmio.sh run
#          builds, then runs it under LD_PRELOAD=.build/release/libioasid-preload.so
#
# mmiobench [ITERATIONS] maps one 4 KiB region with ioasid_trap_map (found with dlsym, so it
# must run under the preload) behind a device that keeps 4-byte registers in an array, and
# prints one line per operation: NAME MEDIAN_NS MIN_NS (ns per operation, median and minimum over
# 15 repetitions; each repetition runs every operation ITERATIONS times, the order rotating):
#   trap_load4    a volatile 4-byte load from the region (fault, decode, handler, sigreturn)
#   trap_store4   a volatile 4-byte store to the region
#   trap_memcpy64 memcpy of 64 bytes from a buffer into the region (glibc's, as picked for this
#                 CPU; "memcpy64_accesses N" says how many trapped accesses one makes)
#   getppid       syscall(SYS_getppid): one real system call, the baseline
#   pread4        pread of 4 bytes from a memfd: one real system call that copies data
#   signal_usr1   tgkill(self, SIGUSR1) to an empty handler: a system call plus the kernel's
#                 signal delivery and sigreturn, the floor under any trap done with signals
# When libmalloccount.so (scripts/bench-preload.sh) is preloaded too, it also prints
# "mallocs_per_access N" and "frees_per_access N" over 100000 trapped loads and stores.
#
# environment: CC (default cc), IOASID_BENCH_CONFIG (release, default; or debug)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CC=${CC:-cc}
CONFIG=${IOASID_BENCH_CONFIG:-release}

build() {
	local out=$1
	mkdir -p "$out"
	cat > "$out/mmiobench.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*handler_fn)(void *, uint64_t, unsigned, int, void *);
typedef void *(*trap_map_fn)(size_t, void *, handler_fn, void *);

static uint32_t registers[1024];
static unsigned long device_calls;

static int device(void *context, uint64_t offset, unsigned size, int is_write, void *data) {
	(void)context;
	device_calls++;
	if (offset + size > sizeof registers) return -1;
	if (is_write) memcpy((uint8_t *)registers + offset, data, size);
	else memcpy(data, (uint8_t *)registers + offset, size);
	return 0;
}

static uint64_t now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int compare(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

#define REPS 15
#define OPS 6
static const char *const names[OPS] = {"trap_load4", "trap_store4", "getppid", "pread4", "signal_usr1", "trap_memcpy64"};

/* Called through a volatile pointer: the compiler cannot inline it into stores of its own. */
static void *(*volatile copy)(void *, const void *, size_t) = memcpy;

static void empty_handler(int signo) { (void)signo; }

int main(int argc, char **argv) {
	long iterations = argc > 1 ? atol(argv[1]) : 20000;
	trap_map_fn trap_map = (trap_map_fn)dlsym(RTLD_DEFAULT, "ioasid_trap_map");
	if (trap_map == NULL) { fprintf(stderr, "run under libioasid-preload.so\n"); return 2; }
	volatile uint32_t *bar = trap_map(4096, NULL, device, NULL);
	if (bar == MAP_FAILED) { perror("ioasid_trap_map"); return 2; }
	int memfd = memfd_create("mmiobench", 0);
	if (memfd < 0 || write(memfd, "abcdefgh", 8) != 8) { perror("memfd"); return 2; }

	struct sigaction usr1;
	memset(&usr1, 0, sizeof usr1);
	usr1.sa_handler = empty_handler;
	sigaction(SIGUSR1, &usr1, NULL);
	pid_t pid = getpid(), tid = (pid_t)syscall(SYS_gettid);
	double samples[OPS][REPS];
	uint32_t sink = 0;
	uint8_t source[64];
	for (int i = 0; i < 64; i++) source[i] = (uint8_t)i;
	for (int rep = -2; rep < REPS; rep++) { /* two warm-up repetitions */
		for (int k = 0; k < OPS; k++) {
			int op = (k + (rep < 0 ? 0 : rep)) % OPS; /* rotate the order between repetitions */
			uint64_t t0 = now();
			switch (op) {
			case 0: for (long i = 0; i < iterations; i++) sink += bar[4]; break;
			case 1: for (long i = 0; i < iterations; i++) bar[5] = (uint32_t)i; break;
			case 2: for (long i = 0; i < iterations; i++) sink += (uint32_t)syscall(SYS_getppid); break;
			case 3: for (long i = 0; i < iterations; i++) {
					uint32_t word;
					if (pread(memfd, &word, 4, 0) != 4) { perror("pread"); return 2; }
					sink += word;
				}
				break;
			case 4: for (long i = 0; i < iterations; i++) syscall(SYS_tgkill, pid, tid, SIGUSR1); break;
			case 5: for (long i = 0; i < iterations; i++) { source[0] = (uint8_t)i; copy((void *)((uintptr_t)bar + 64), source, 64); } break;
			}
			if (rep >= 0) samples[op][rep] = (double)(now() - t0) / (double)iterations;
		}
	}
	if (registers[5] != (uint32_t)(iterations - 1)) { fprintf(stderr, "stores lost\n"); return 2; }
	for (int op = 0; op < OPS; op++) {
		qsort(samples[op], REPS, sizeof(double), compare);
		printf("%s %.1f %.1f\n", names[op], samples[op][REPS / 2], samples[op][0]);
	}
	unsigned long calls_before = device_calls;
	copy((void *)((uintptr_t)bar + 64), source, 64);
	printf("memcpy64_accesses %lu\n", device_calls - calls_before);
	if (memcmp((uint8_t *)registers + 64, source, 64) != 0) { fprintf(stderr, "memcpy lost\n"); return 2; }

	unsigned long *mallocs = dlsym(RTLD_DEFAULT, "ioasid_bench_malloc_calls");
	unsigned long *frees = dlsym(RTLD_DEFAULT, "ioasid_bench_free_calls");
	if (mallocs != NULL && frees != NULL) {
		unsigned long m0 = __atomic_load_n(mallocs, __ATOMIC_RELAXED), f0 = __atomic_load_n(frees, __ATOMIC_RELAXED);
		for (long i = 0; i < 50000; i++) { sink += bar[6]; bar[7] = (uint32_t)i; }
		unsigned long m1 = __atomic_load_n(mallocs, __ATOMIC_RELAXED), f1 = __atomic_load_n(frees, __ATOMIC_RELAXED);
		printf("mallocs_per_access %.4f\nfrees_per_access %.4f\n", (double)(m1 - m0) / 100000, (double)(f1 - f0) / 100000);
	}
	return sink == 0x12345 ? 3 : 0;
}
EOF
	"$CC" -O2 -o "$out/mmiobench" "$out/mmiobench.c" -ldl
	echo "$out/mmiobench"
}

case "${1:-}" in
build)
	build "${2:-$ROOT/.build/bench}"
	;;
run)
	out=$ROOT/.build/bench
	build "$out" > /dev/null
	preload=$ROOT/.build/$CONFIG/libioasid-preload.so
	[ -f "$preload" ] || { echo "no $preload: run swift build -c $CONFIG first" >&2; exit 2; }
	LD_PRELOAD=$preload "$out/mmiobench"
	;;
*)
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
