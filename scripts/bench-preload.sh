#!/bin/bash
# The C parts of the benchmark (Sources/ioasid-benchmark), compiled at run time with cc.
#
# usage: scripts/bench-preload.sh build [OUTDIR]
#          builds OUTDIR/fdbench (libc ioctl/read/close on foreign fds) and
#          OUTDIR/libmalloccount.so (a malloc-call counter to LD_PRELOAD); prints both paths
#        scripts/bench-preload.sh run [ROUNDS]
#          builds, then runs fdbench ROUNDS times plainly and ROUNDS times with
#          LD_PRELOAD=.build/release/libioasid-preload.so, interleaved, printing each run's
#          lines prefixed with "plain" or "preload" (the benchmark does the statistics)
#
# fdbench prints one line per operation: NAME MEDIAN_NS MIN_NS LIBC_MEDIAN_NS LIBC_MIN_NS (ns per
# call, median and minimum over 15 repetitions). The first pair is the ordinary call (through
# the PLT, so through the preload's wrapper when preloaded); the second pair is glibc's own
# function called through a pointer from dlsym(dlopen("libc.so.6")), timed in the same
# repetition (half the calls each, the order alternating between repetitions): an in-process
# baseline that never passes through the preload.
# Operations, all on descriptors that are not ioasid's:
#   ioctl_fionread  ioctl(pipe, FIONREAD, &n) on a pipe holding 64 bytes
#   read_eventfd    read(eventfd, 8 bytes) on a semaphore eventfd with a huge count (every
#                   read succeeds and returns 1)
#   close           close() of a descriptor made by dup() (the dup()s are not timed)
#   stat_foreign    stat("/etc/passwd"): a path the preload rules out with two byte compares
#   stat_dev_null   stat("/dev/null"): a path under /dev, which pays the preload's prefix checks
#   open_close      open("/etc/passwd", O_RDONLY) then close() of it
#
# libmalloccount.so replaces malloc, calloc, realloc, free, memalign, aligned_alloc,
# posix_memalign, valloc and pvalloc, counts the calls of the allocating functions in
# `ioasid_bench_malloc_calls`, of free in `ioasid_bench_free_calls` and the live heap bytes
# (malloc_usable_size) in `ioasid_bench_live_bytes` (relaxed atomics, read with dlsym), and
# forwards to glibc's __libc_* functions.
#
# environment: CC (default cc), IOASID_BENCH_CONFIG (release, default; or debug)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CC=${CC:-cc}
CONFIG=${IOASID_BENCH_CONFIG:-release}

build() {
	local out=$1
	mkdir -p "$out"
	cat > "$out/fdbench.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

#define REPS 15
static void report(const char *name, double *v, double *d) {
	qsort(v, REPS, sizeof(double), cmp);
	qsort(d, REPS, sizeof(double), cmp);
	printf("%s %.3f %.3f %.3f %.3f\n", name, v[REPS / 2], v[0], d[REPS / 2], d[0]);
}

typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef int (*close_fn)(int);
typedef int (*stat_fn)(const char *, struct stat *);
typedef int (*open_fn)(const char *, int, ...);

/* Times `path_call` (through the PLT) against `direct_call` (glibc's function) like the loops
 * above: half the calls each per repetition, the order alternating. */
#define PATH_BENCH(NAME, PLT_CALL, DIRECT_CALL)                                                     \
	for (int rep = -2; rep < REPS; rep++) {                                                    \
		uint64_t plt = 0, direct = 0;                                                          \
		for (int k = 0; k < 2; k++) {                                                          \
			uint64_t t0 = now();                                                           \
			if ((k ^ rep) & 1) {                                                           \
				for (long i = 0; i < iterations / 2; i++) { PLT_CALL; }                \
				plt += now() - t0;                                                     \
			} else {                                                                       \
				for (long i = 0; i < iterations / 2; i++) { DIRECT_CALL; }             \
				direct += now() - t0;                                                  \
			}                                                                              \
		}                                                                                      \
		if (rep >= 0) { r[rep] = (double)plt / (iterations / 2); d[rep] = (double)direct / (iterations / 2); } \
	}                                                                                              \
	report(NAME, r, d);

/* Each repetition times the ordinary call (through the PLT: the preload's wrapper when it is
 * preloaded) and, right after, glibc's own function called through a pointer from
 * dlsym(libc.so.6); the second is the in-process baseline. */
int main(int argc, char **argv) {
	long iterations = argc > 1 ? atol(argv[1]) : 200000;
	double r[REPS], d[REPS];
	void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
	if (!libc) { fprintf(stderr, "no libc.so.6\n"); return 2; }
	ioctl_fn volatile libc_ioctl = (ioctl_fn)dlsym(libc, "ioctl");
	read_fn volatile libc_read = (read_fn)dlsym(libc, "read");
	close_fn volatile libc_close = (close_fn)dlsym(libc, "close");
	int p[2];
	if (pipe(p) != 0) { perror("pipe"); return 2; }
	char bytes[64] = {0};
	if (write(p[1], bytes, sizeof(bytes)) != (ssize_t)sizeof(bytes)) { perror("write"); return 2; }
	int efd = eventfd(0xfffffff0u, EFD_SEMAPHORE | EFD_NONBLOCK);
	if (efd < 0) { perror("eventfd"); return 2; }

	for (int rep = -2; rep < REPS; rep++) { /* two warm-up repetitions */
		int n = 0;
		uint64_t plt = 0, direct = 0;
		for (int k = 0; k < 2; k++) { /* alternate which goes first, so order bias cancels */
			uint64_t t0 = now();
			if ((k ^ rep) & 1) {
				for (long i = 0; i < iterations / 2; i++)
					if (ioctl(p[0], FIONREAD, &n) != 0 || n != 64) { perror("ioctl"); return 2; }
				plt += now() - t0;
			} else {
				ioctl_fn f = libc_ioctl;
				for (long i = 0; i < iterations / 2; i++)
					if (f(p[0], FIONREAD, &n) != 0 || n != 64) { perror("ioctl"); return 2; }
				direct += now() - t0;
			}
		}
		if (rep >= 0) { r[rep] = (double)plt / (iterations / 2); d[rep] = (double)direct / (iterations / 2); }
	}
	report("ioctl_fionread", r, d);

	for (int rep = -2; rep < REPS; rep++) {
		uint64_t v;
		uint64_t plt = 0, direct = 0;
		for (int k = 0; k < 2; k++) {
			uint64_t t0 = now();
			if ((k ^ rep) & 1) {
				for (long i = 0; i < iterations / 2; i++)
					if (read(efd, &v, sizeof(v)) != (ssize_t)sizeof(v)) { perror("read"); return 2; }
				plt += now() - t0;
			} else {
				read_fn f = libc_read;
				for (long i = 0; i < iterations / 2; i++)
					if (f(efd, &v, sizeof(v)) != (ssize_t)sizeof(v)) { perror("read"); return 2; }
				direct += now() - t0;
			}
		}
		if (rep >= 0) { r[rep] = (double)plt / (iterations / 2); d[rep] = (double)direct / (iterations / 2); }
	}
	report("read_eventfd", r, d);

	enum { BATCH = 500 };
	int fds[BATCH];
	long batches = iterations / BATCH > 0 ? iterations / BATCH : 1;
	for (int rep = -2; rep < REPS; rep++) {
		uint64_t total = 0, direct = 0;
		for (long b = 0; b < batches; b++) {
			for (int k = 0; k < 2; k++) {
				for (int i = 0; i < BATCH; i++)
					if ((fds[i] = dup(efd)) < 0) { perror("dup"); return 2; }
				uint64_t t0 = now();
				if ((k ^ b ^ rep) & 1) {
					for (int i = 0; i < BATCH; i++)
						if (close(fds[i]) != 0) { perror("close"); return 2; }
					total += now() - t0;
				} else {
					close_fn f = libc_close;
					for (int i = 0; i < BATCH; i++)
						if (f(fds[i]) != 0) { perror("close"); return 2; }
					direct += now() - t0;
				}
			}
		}
		if (rep >= 0) { r[rep] = (double)total / (batches * BATCH); d[rep] = (double)direct / (batches * BATCH); }
	}
	report("close", r, d);

	stat_fn volatile libc_stat = (stat_fn)dlsym(libc, "stat");
	open_fn volatile libc_open = (open_fn)dlsym(libc, "open");
	if (!libc_stat || !libc_open) { fprintf(stderr, "no stat/open in libc.so.6\n"); return 2; }
	struct stat st;
	PATH_BENCH("stat_foreign",
		if (stat("/etc/passwd", &st) != 0) { perror("stat"); return 2; },
		if (libc_stat("/etc/passwd", &st) != 0) { perror("stat"); return 2; })
	PATH_BENCH("stat_dev_null",
		if (stat("/dev/null", &st) != 0) { perror("stat"); return 2; },
		if (libc_stat("/dev/null", &st) != 0) { perror("stat"); return 2; })
	PATH_BENCH("open_close",
		int fd = open("/etc/passwd", O_RDONLY); if (fd < 0 || close(fd) != 0) { perror("open"); return 2; },
		int fd = libc_open("/etc/passwd", O_RDONLY); if (fd < 0 || libc_close(fd) != 0) { perror("open"); return 2; })
	return 0;
}
EOF
	cat > "$out/malloccount.c" <<'EOF'
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdatomic.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

/* Calls of the allocating functions, calls of free, and the bytes of live blocks (their
 * malloc_usable_size). Read with dlsym; relaxed atomics, so any thread may allocate. */
_Atomic unsigned long ioasid_bench_malloc_calls;
_Atomic unsigned long ioasid_bench_free_calls;
_Atomic long ioasid_bench_live_bytes;

#define COUNT(c) atomic_fetch_add_explicit(&(c), 1, memory_order_relaxed)
static inline void *added(void *p) {
	if (p) atomic_fetch_add_explicit(&ioasid_bench_live_bytes, (long)malloc_usable_size(p), memory_order_relaxed);
	return p;
}
static inline void removed(void *p) {
	if (p) atomic_fetch_sub_explicit(&ioasid_bench_live_bytes, (long)malloc_usable_size(p), memory_order_relaxed);
}

void *malloc(size_t n) { COUNT(ioasid_bench_malloc_calls); return added(__libc_malloc(n)); }
void *calloc(size_t n, size_t s) { COUNT(ioasid_bench_malloc_calls); return added(__libc_calloc(n, s)); }
void *realloc(void *p, size_t n) {
	COUNT(ioasid_bench_malloc_calls);
	long before = p ? (long)malloc_usable_size(p) : 0;
	void *q = __libc_realloc(p, n);
	if (q || n == 0) {
		atomic_fetch_sub_explicit(&ioasid_bench_live_bytes, before, memory_order_relaxed);
		added(q);
	}
	return q;
}
void free(void *p) { if (p) COUNT(ioasid_bench_free_calls); removed(p); __libc_free(p); }
void *memalign(size_t a, size_t n) { COUNT(ioasid_bench_malloc_calls); return added(__libc_memalign(a, n)); }
void *aligned_alloc(size_t a, size_t n) { COUNT(ioasid_bench_malloc_calls); return added(__libc_memalign(a, n)); }
void *valloc(size_t n) { COUNT(ioasid_bench_malloc_calls); return added(__libc_valloc(n)); }
void *pvalloc(size_t n) { COUNT(ioasid_bench_malloc_calls); return added(__libc_pvalloc(n)); }
int posix_memalign(void **out, size_t a, size_t n) {
	COUNT(ioasid_bench_malloc_calls);
	if (a < sizeof(void *) || (a & (a - 1)) != 0) return EINVAL;
	void *p = added(__libc_memalign(a, n));
	if (!p && n) return ENOMEM;
	*out = p;
	return 0;
}
EOF
	"$CC" -O2 -o "$out/fdbench" "$out/fdbench.c" -ldl
	"$CC" -O2 -shared -fPIC -o "$out/libmalloccount.so" "$out/malloccount.c"
	echo "$out/fdbench"
	echo "$out/libmalloccount.so"
}

case "${1:-}" in
build)
	build "${2:-$ROOT/.build/bench}"
	;;
run)
	rounds=${2:-5}
	out=$ROOT/.build/bench
	build "$out" > /dev/null
	preload=$ROOT/.build/$CONFIG/libioasid-preload.so
	[ -f "$preload" ] || { echo "no $preload: run swift build -c $CONFIG first" >&2; exit 2; }
	for ((i = 0; i < rounds; i++)); do
		"$out/fdbench" | sed 's/^/plain /'
		LD_PRELOAD=$preload "$out/fdbench" | sed 's/^/preload /'
	done
	;;
*)
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
