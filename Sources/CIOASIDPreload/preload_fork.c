/*
 * fork waits until no other thread is inside the engine.
 *
 * A forked child has one thread: the one that called fork. If another thread was inside an
 * engine call at that moment, the locks it held stay held in the child forever, and the
 * child's first call on an engine descriptor (close included) would wait for them. On the
 * kernel nothing of the sort can happen. So a pthread_atfork handler, registered when the
 * engine is loaded, stops new engine calls, waits for the ones under way to leave, lets fork
 * copy a quiet engine, and opens the gate again in parent and child.
 *
 * Cost on the engine's path: each thread has a slot of its own (a cache line) and marks it on
 * the outermost engine call with a plain store, then reads the gate's flag; no atomic
 * read-modify-write and no shared cache line. The ordering the two sides need (a store then a
 * load on each) comes from membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) on the fork side, which
 * makes every running thread of the process execute a full barrier. Where membarrier is missing,
 * or when the slots run out, threads share one counter updated with atomic read-modify-writes
 * (full barriers themselves).
 *
 * Not covered: the engine's own threads (machine drivers' Dispatch queues, the thread that
 * watches VFIO ioeventfds and unmask eventfds) take the engine's locks without entering through
 * the preload; fork, _Fork or clone as raw system calls run no
 * atfork handler. A call that stays inside the engine for more than two seconds is not waited
 * for (the fork goes ahead; the child may then wait on that call's locks).
 */
#define _GNU_SOURCE
#include "deferral.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { SLOT_COUNT = 1024 };

_Thread_local struct ioasid_fork_slot *ioasid_fork_slot __attribute__((tls_model("initial-exec")));
struct ioasid_fork_slot ioasid_fork_shared_slot;
_Atomic int ioasid_fork_pending;

static struct ioasid_fork_slot slots[SLOT_COUNT] __attribute__((aligned(64)));
static _Atomic int membarrier_ready;
static pthread_key_t slot_key;
static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER;

/* A thread ends: its slot is free again. */
static void release_slot(void *value) {
    struct ioasid_fork_slot *slot = value;
    if (slot != NULL && slot != &ioasid_fork_shared_slot) {
        atomic_store_explicit(&slot->busy, 0, memory_order_relaxed);
        atomic_store_explicit(&slot->taken, 0, memory_order_release);
    }
}

static struct ioasid_fork_slot *claim_slot(void) {
    if (!atomic_load_explicit(&membarrier_ready, memory_order_acquire)) return &ioasid_fork_shared_slot;
    for (int index = 0; index < SLOT_COUNT; index++) {
        int expected = 0;
        if (atomic_load_explicit(&slots[index].taken, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong(&slots[index].taken, &expected, 1)) {
            if (pthread_setspecific(slot_key, &slots[index]) != 0) {
                atomic_store(&slots[index].taken, 0);
                return &ioasid_fork_shared_slot;
            }
            return &slots[index];
        }
    }
    return &ioasid_fork_shared_slot;
}

void ioasid_fork_gate_slow(void) {
    for (;;) {
        struct ioasid_fork_slot *slot = ioasid_fork_slot;
        if (slot == NULL) ioasid_fork_slot = slot = claim_slot();
        if (slot == &ioasid_fork_shared_slot) {
            atomic_fetch_add(&slot->busy, 1);
            if (!atomic_load(&ioasid_fork_pending)) return;
            atomic_fetch_sub(&slot->busy, 1);
        } else {
            atomic_store_explicit(&slot->busy, 1, memory_order_relaxed);
            atomic_signal_fence(memory_order_seq_cst);
            if (!atomic_load_explicit(&ioasid_fork_pending, memory_order_relaxed)) return;
            atomic_store_explicit(&slot->busy, 0, memory_order_release);
        }
        while (atomic_load_explicit(&ioasid_fork_pending, memory_order_acquire)) (void)syscall(SYS_sched_yield);
    }
}

static long long now_ns(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (long long)time.tv_sec * 1000000000LL + time.tv_nsec;
}

/* Waits until `slot` shows at most `own` calls inside; 0 when the deadline passed. */
static int wait_slot(struct ioasid_fork_slot *slot, unsigned own, long long deadline) {
    while (atomic_load_explicit(&slot->busy, memory_order_acquire) > own) {
        if (now_ns() > deadline) return 0;
        (void)syscall(SYS_sched_yield);
    }
    return 1;
}

static void before_fork(void) {
    pthread_mutex_lock(&fork_lock);
    atomic_store(&ioasid_fork_pending, 1);
    if (atomic_load(&membarrier_ready)) (void)syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    long long deadline = now_ns() + 2000000000LL;
    struct ioasid_fork_slot *own = ioasid_fork_slot;
    unsigned inside = ioasid_engine_depth > 0 ? 1 : 0; /* fork from inside an engine call */
    for (int index = 0; index < SLOT_COUNT; index++) {
        if (&slots[index] == own || !atomic_load_explicit(&slots[index].taken, memory_order_relaxed)) continue;
        if (!wait_slot(&slots[index], 0, deadline)) break;
    }
    (void)wait_slot(&ioasid_fork_shared_slot, own == &ioasid_fork_shared_slot ? inside : 0, deadline);
}

static void after_fork_parent(void) {
    atomic_store(&ioasid_fork_pending, 0);
    pthread_mutex_unlock(&fork_lock);
}

static void after_fork_child(void) {
    /* The other threads are gone: so are their slots. */
    struct ioasid_fork_slot *own = ioasid_fork_slot;
    for (int index = 0; index < SLOT_COUNT; index++) {
        if (&slots[index] == own) continue;
        atomic_store_explicit(&slots[index].busy, 0, memory_order_relaxed);
        atomic_store_explicit(&slots[index].taken, 0, memory_order_relaxed);
    }
    unsigned inside = own == &ioasid_fork_shared_slot && ioasid_engine_depth > 0 ? 1 : 0;
    atomic_store(&ioasid_fork_shared_slot.busy, inside);
    /* The child is a new process for membarrier's registration. */
    if (atomic_load(&membarrier_ready) && syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0)
        atomic_store(&membarrier_ready, 0);
    atomic_store(&ioasid_fork_pending, 0);
    pthread_mutex_unlock(&fork_lock);
}

void ioasid_fork_gate_install(void) {
    if (pthread_key_create(&slot_key, release_slot) != 0) return; /* every thread shares the counter */
    long commands = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (commands > 0 && (commands & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
        atomic_store(&membarrier_ready, 1);
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}
