/*
 * The kernel's pin check and the spans it already passed (ioasid_sys_pinnable.h says what and
 * why; the rules themselves are the kernel's: mm/gup.c, check_vma_flags).
 */
#define _GNU_SOURCE
#include "ioasid_sys_pinnable.h"
#include "ioasid_sys_uaccess.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* ---------------------------------------------------------------------------------------------
 * Asking the kernel.
 */

/* 1 when the kernel has MADV_POPULATE_READ/WRITE (5.14 and later), 0 when not, -1 unknown. */
static int populate_supported = -1;
static _Thread_local uint64_t populates; /* by this thread, for tests */

static int probe_populate(void) {
    static char page[1] __attribute__((aligned(4096)));
    long page_size = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)page & ~(uintptr_t)(page_size - 1);
    long rc = syscall(SYS_madvise, (void *)start, (size_t)page_size, (long)MADV_POPULATE_READ);
    return rc == 0 || errno != EINVAL;
}

/* MADV_POPULATE_READ/WRITE applies the same checks as the kernel's page pinning and faults the
 * pages in, as pinning does, in one system call; it fails for any page that could not be
 * pinned. Kernels without it get the weaker msync check (mapped, nothing more). */
static long ask_kernel(uint64_t start, uint64_t end, int writable) {
    int supported = __atomic_load_n(&populate_supported, __ATOMIC_RELAXED);
    if (supported < 0) {
        supported = probe_populate();
        __atomic_store_n(&populate_supported, supported, __ATOMIC_RELAXED);
    }
    populates++;
    if (supported) {
        long advice = writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
        long rc;
        do
            rc = syscall(SYS_madvise, (void *)(uintptr_t)start, (size_t)(end - start), advice);
        while (rc != 0 && errno == EINTR);
        return rc == 0 ? 0 : -EFAULT;
    }
    /* msync fails with ENOMEM when any page of the span is unmapped; it touches nothing. */
    if (syscall(SYS_msync, (void *)(uintptr_t)start, (size_t)(end - start), (long)MS_ASYNC) != 0)
        return -EFAULT;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The spans that passed a writeable check since the last reported change of the mappings.
 *
 * `changes` counts reported changes (each change reports twice, before and after). The set is
 * valid only while `changes` equals its stamp. Writers (an insert after a successful populate)
 * take `writer` and make `sequence` odd while they change the set; readers take no lock.
 */

enum { SPAN_CAPACITY = 64 };

static _Atomic int watching;
static _Atomic uint64_t changes;
static _Atomic uint64_t sequence;
static pthread_mutex_t writer = PTHREAD_MUTEX_INITIALIZER;
static struct {
    _Atomic uint64_t stamp;      /* the value of `changes` the spans are valid under */
    _Atomic uint32_t count;
    struct {
        _Atomic uint64_t start, end; /* [start, end), page aligned; sorted, disjoint, not adjacent */
    } spans[SPAN_CAPACITY];
} set;

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

void ioasid_sys_mappings_changing(void) { atomic_fetch_add_explicit(&changes, 1, memory_order_seq_cst); }

void ioasid_sys_pinnable_watch(int on) {
    atomic_store_explicit(&watching, on ? 1 : 0, memory_order_seq_cst);
    ioasid_sys_mappings_changing();
}

void ioasid_sys_pinnable_forget_all(void) { ioasid_sys_mappings_changing(); }

uint64_t ioasid_sys_pinnable_populates(void) { return populates; }

uint64_t ioasid_sys_pinnable_changes(void) { return atomic_load_explicit(&changes, memory_order_seq_cst); }

/* Whether [start, end) lies inside one span, read without a lock (the caller validates with
 * `sequence` and `changes`); a torn read gives a wrong answer the caller then discards. */
static int covered(uint64_t start, uint64_t end, uint64_t stamp) {
    if (LOAD(set.stamp) != stamp) return 0;
    uint32_t count = LOAD(set.count);
    if (count > SPAN_CAPACITY) return 0;
    uint32_t lo = 0, hi = count; /* first span whose end > start */
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (LOAD(set.spans[mid].end) <= start) lo = mid + 1; else hi = mid;
    }
    return lo < count && LOAD(set.spans[lo].start) <= start && end <= LOAD(set.spans[lo].end);
}

/* Adds [start, end), merged with the spans it overlaps or touches. Writer lock held. */
static void insert_locked(uint64_t start, uint64_t end) {
    uint32_t count = LOAD(set.count);
    uint32_t first = 0;
    while (first < count && LOAD(set.spans[first].end) < start) first++;
    uint32_t last = first; /* one past the last span merged */
    while (last < count && LOAD(set.spans[last].start) <= end) {
        if (LOAD(set.spans[last].start) < start) start = LOAD(set.spans[last].start);
        if (LOAD(set.spans[last].end) > end) end = LOAD(set.spans[last].end);
        last++;
    }
    if (first == last && count == SPAN_CAPACITY) { /* full: start over with this span */
        STORE(set.spans[0].start, start);
        STORE(set.spans[0].end, end);
        STORE(set.count, 1);
        return;
    }
    /* Replace spans [first, last) by one: shift the tail. */
    uint32_t removed = last - first; /* >= 0; the new span takes one slot */
    if (removed == 0) {
        for (uint32_t i = count; i > first; i--) {
            STORE(set.spans[i].start, LOAD(set.spans[i - 1].start));
            STORE(set.spans[i].end, LOAD(set.spans[i - 1].end));
        }
        count++;
    } else if (removed > 1) {
        for (uint32_t i = last; i < count; i++) {
            STORE(set.spans[i - removed + 1].start, LOAD(set.spans[i].start));
            STORE(set.spans[i - removed + 1].end, LOAD(set.spans[i].end));
        }
        count -= removed - 1;
    }
    STORE(set.spans[first].start, start);
    STORE(set.spans[first].end, end);
    STORE(set.count, count);
}

/* Remembers [start, end), which passed a writeable populate that began when `changes` read
 * `stamp`; nothing if the mappings changed since. */
static void remember(uint64_t start, uint64_t end, uint64_t stamp) {
    pthread_mutex_lock(&writer);
    if (atomic_load_explicit(&changes, memory_order_seq_cst) == stamp) {
        uint64_t s = LOAD(sequence);
        STORE(sequence, s + 1);
        atomic_thread_fence(memory_order_release);
        if (LOAD(set.stamp) != stamp) {
            STORE(set.count, 0);
            STORE(set.stamp, stamp);
        }
        insert_locked(start, end);
        atomic_store_explicit(&sequence, s + 2, memory_order_release);
    }
    pthread_mutex_unlock(&writer);
}

int ioasid_sys_pinnable_remembered(uint64_t address, uint64_t length) {
    uint64_t end = address + length;
    if (length == 0 || end < address) return 0;
    uint64_t stamp = atomic_load_explicit(&changes, memory_order_seq_cst);
    uint64_t s = atomic_load_explicit(&sequence, memory_order_acquire);
    if (s & 1) return 0;
    int found = covered(address & ~(uint64_t)4095, (end + 4095) & ~(uint64_t)4095, stamp);
    atomic_thread_fence(memory_order_acquire);
    return found && LOAD(sequence) == s && atomic_load_explicit(&changes, memory_order_seq_cst) == stamp;
}

/* ---------------------------------------------------------------------------------------------
 * The check.
 */

static long page_size_cached;

long ioasid_sys_check_range(uint64_t address, uint64_t length, int writable) {
    long page = __atomic_load_n(&page_size_cached, __ATOMIC_RELAXED);
    if (page == 0) {
        page = sysconf(_SC_PAGESIZE);
        __atomic_store_n(&page_size_cached, page, __ATOMIC_RELAXED);
    }
    uint64_t start = address & ~(uint64_t)(page - 1);
    uint64_t end = address + length;
    if (length == 0 || end < address)
        return -EFAULT;
    end = (end + (uint64_t)page - 1) & ~(uint64_t)(page - 1);
    if (end == 0)
        return -EFAULT;
    if (!writable || page != 4096 || !atomic_load_explicit(&watching, memory_order_relaxed))
        return ask_kernel(start, end, writable);

    uint64_t stamp = atomic_load_explicit(&changes, memory_order_seq_cst);
    uint64_t s = atomic_load_explicit(&sequence, memory_order_acquire);
    if (!(s & 1) && covered(start, end, stamp)) {
        /* Remembered: the pages are ordinary memory; the probe says they are still there and
         * writeable. Trusted only if no change was reported meanwhile (then the probe touched
         * the memory that was checked). */
        if (ioasid_sys_safe_probe((const void *)(uintptr_t)start, (size_t)((end - start) / 4096), 1) == 0) {
            atomic_thread_fence(memory_order_acquire);
            if (LOAD(sequence) == s && atomic_load_explicit(&changes, memory_order_seq_cst) == stamp) return 0;
        }
    }
    long rc = ask_kernel(start, end, 1);
    if (rc == 0) remember(start, end, stamp);
    return rc;
}
