/*
 * Trapped MMIO: plain loads and stores to a device's BAR reach the device model, one call per
 * access, in program order.
 *
 * A user-space driver (DPDK, SPDK, the kernel's VFIO selftest drivers) mmaps a BAR and then
 * reads and writes registers with ordinary moves. There is no device behind our mapping, so
 * ioasid_trap_map() reserves address space with no access at all: every access faults. The
 * SIGSEGV handler below finds the faulting address in a table of trapped regions, decodes the
 * instruction at RIP (mmio_decoder.c), performs the access through the region's handler, writes
 * the destination register and flags into the signal's ucontext, moves RIP past the instruction
 * and returns; the program continues as if the device had answered.
 *
 * What reaches the handler: one call per access, in program order, with the access's size (1, 2,
 * 4, 8; 16, 32 or 64 for a whole vector move; 64 for MOVDIR64B). A vector load writes the
 * register into the frame's FXSAVE/XSAVE image (below, "Vector registers in the signal frame"):
 * legacy SSE keeps the bits above 127, VEX and EVEX zero everything above the loaded bytes up to
 * the widest vector the OS enabled. A masked EVEX move (k1-k7) touches only its selected
 * elements: each run of adjacent ones, lowest first, as naturally aligned accesses of at most 8
 * bytes; a load merges or zeroes the others as EVEX.z says. MOVS and STOS (with REP: RCX times,
 * up or down as DF says, 32-bit pointers under 67) are done element by element, each a read of
 * the source then a write of the destination, through a region's handler or, for an operand in
 * normal memory, a fault-safe copy; a long REP is done in chunks, the instruction restarting
 * from the updated RCX/RSI/RDI as an interrupted REP does (see "String instructions").
 *
 * Vocabulary. A *region* is [start, end) with a handler, its context and the offset of `start`
 * in the region as first mapped (a partly unmapped region keeps its offsets). A *slot* holds one
 * region in a fixed table (no allocation, ever). The *program's action* for SIGSEGV, SIGBUS and
 * SIGILL is what the program installed with sigaction()/signal(); once the first region is
 * mapped, the kernel runs ours and we run theirs for every signal that is not a trapped access.
 *
 * Invariants and concurrency.
 *  - The table is read only by the signal handler, lock-free: a slot's generation is odd while
 *    a writer changes it (readers wait), and a reader that found its region holds `users` until
 *    the handler returned. Writers (map, unmap, munmap) are serialized by `regions_lock`; a
 *    writer makes the slot odd, then waits for `users` to drop to zero, so once
 *    ioasid_trap_unmap() returns no handler call for that range is running or will start.
 *  - The program's actions are a seqlock each, written under `actions_lock`, a spinlock taken
 *    only with every signal blocked (sigaction is async-signal-safe and so must we be).
 *  - Our handler runs with every signal blocked but SIGSEGV and SIGBUS (a safe copy a device
 *    model makes during a trapped access may fault, and the nested call fixes it up; see
 *    ioasid_sys_uaccess.h), on the alternate signal stack when the
 *    program's action for that signal has SA_ONSTACK; the program's handler runs with the mask
 *    the kernel would have given it (the mask at the fault, its sa_mask, the signal unless
 *    SA_NODEFER).
 *  - The trap path calls no allocator and takes no lock: a page fault, the decoder, the
 *    handler, sigreturn. Normal-memory operands (MOVDIR64B's source, a string instruction's
 *    other side) are copied with the safe copy of ioasid_sys_uaccess.h, whose fault this very
 *    handler fixes up (enabled once a region is mapped), else with process_vm_readv/writev: a
 *    bad one cannot fault inside the handler. It gives the program the SIGSEGV the hardware
 *    would have (si_addr the first bad byte, SEGV_MAPERR or SEGV_ACCERR, RIP at the
 *    instruction, a string instruction's registers at the element that faulted).
 *  - A handler call holds its region's `users`; a string instruction may hold two (source and
 *    destination). Holding one, it never waits for a writer (who may wait for it): it stops and
 *    lets the instruction restart instead.
 *
 * MOVDIR64B and MOVDIRI on a CPU without them raise #UD before the page fault (decoding comes
 * before memory access in the exception priorities), so SIGILL is trapped too: when the
 * instruction at RIP is one of those two and its destination is in a region, it is performed
 * like any other trapped store; every other SIGILL goes to the program.
 *
 * An instruction the decoder does not know, an access that leaves its region, or a vector move
 * whose register state the signal frame lacks (an XSAVE component the CPU has but the frame
 * does not hold) prints one line to stderr and kills the process with SIGBUS (default action,
 * core dump), whatever the program installed: it is a limitation of ours, not a device error,
 * and looping would hide it. A handler's bus error (-1) is a device error: SIGBUS goes to the
 * program's handler with si_addr set and RIP at the instruction, as on a real machine
 * (returning from that handler runs the instruction again).
 *
 * Not covered (docs/architecture.md, "Trapped MMIO"): programs that install handlers with the
 * raw rt_sigaction system call or are linked statically, threads that block SIGSEGV (the kernel
 * then kills the process on any fault, ours included), string instructions other than MOVS and
 * STOS (LODS, CMPS, SCAS, INS, OUTS), vector instructions other than the moves (a VPCMPEQB or
 * VPBROADCASTB with a memory operand, gathers and scatters), and system calls given a trapped
 * address (the kernel returns EFAULT).
 */
#define _GNU_SOURCE
#include "ioasid_preload.h"
#include "ioasid_sys.h"
#include "ioasid_sys_memory.h"
#include "ioasid_sys_pinnable.h"
#include "ioasid_sys_uaccess.h"
#include "deferral.h"
#include "mmio_decoder.h"
#include "trap.h"

#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdlib.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#define IOASID_EXPORT __attribute__((visibility("default")))

#ifndef ARCH_GET_FS
#define ARCH_GET_FS 0x1003
#define ARCH_GET_GS 0x1004
#endif

/* ---------------------------------------------------------------------------------------------
 * The table of trapped regions.
 */

#define TRAP_SLOTS 256

struct trap_region {
    _Atomic uint64_t generation; /* odd while a writer changes the slot */
    _Atomic uintptr_t start;     /* [start, end); empty when equal */
    _Atomic uintptr_t end;
    _Atomic(ioasid_mmio_handler) handler;
    _Atomic(void *) context;
    _Atomic uint64_t offset_base; /* offset of `start` in the region as first mapped */
    _Atomic long users;           /* handler calls in flight for this slot */
};

static struct trap_region regions[TRAP_SLOTS];
static _Atomic unsigned region_limit;                            /* slots >= limit are empty */
static pthread_mutex_t regions_lock = PTHREAD_MUTEX_INITIALIZER; /* serializes the writers */
static _Thread_local int inside_handler __attribute__((tls_model("initial-exec")));

/* What the signal handler found: a snapshot of the region, with `users` held. */
struct trap_hit {
    struct trap_region *slot;
    uintptr_t start, end;
    ioasid_mmio_handler handler;
    void *context;
    uint64_t offset_base;
};

/* 1 with `users` held when `address` is in a region, 0 when it is in none. A caller that already
 * holds a hit must not wait for a writer (the writer may be waiting for that very hit): with
 * `may_wait` 0 it gets -1 instead when a slot is being changed. */
static int trap_lookup_waiting(uintptr_t address, struct trap_hit *hit, int may_wait) {
    unsigned limit = atomic_load_explicit(&region_limit, memory_order_acquire);
    for (unsigned index = 0; index < limit; index++) {
        struct trap_region *slot = &regions[index];
        for (;;) {
            uint64_t before = atomic_load_explicit(&slot->generation, memory_order_acquire);
            if (before & 1) { /* a writer is changing this slot: wait for it */
                if (!may_wait) return -1;
                sched_yield();
                continue;
            }
            uintptr_t start = atomic_load_explicit(&slot->start, memory_order_relaxed);
            uintptr_t end = atomic_load_explicit(&slot->end, memory_order_relaxed);
            if (address < start || address >= end) {
                atomic_thread_fence(memory_order_acquire);
                if (atomic_load_explicit(&slot->generation, memory_order_relaxed) != before) continue;
                break;
            }
            hit->handler = atomic_load_explicit(&slot->handler, memory_order_relaxed);
            hit->context = atomic_load_explicit(&slot->context, memory_order_relaxed);
            hit->offset_base = atomic_load_explicit(&slot->offset_base, memory_order_relaxed);
            atomic_fetch_add_explicit(&slot->users, 1, memory_order_seq_cst);
            if (atomic_load_explicit(&slot->generation, memory_order_seq_cst) != before) {
                atomic_fetch_sub_explicit(&slot->users, 1, memory_order_release);
                continue;
            }
            hit->slot = slot;
            hit->start = start;
            hit->end = end;
            return 1;
        }
    }
    return 0;
}

static int trap_lookup(uintptr_t address, struct trap_hit *hit) { return trap_lookup_waiting(address, hit, 1); }

static void trap_release(struct trap_hit *hit) {
    atomic_fetch_sub_explicit(&hit->slot->users, 1, memory_order_release);
}

/* Writers (under regions_lock): open a slot for change, waiting out handler calls in flight. */
static void slot_open(struct trap_region *slot) {
    atomic_fetch_add_explicit(&slot->generation, 1, memory_order_seq_cst);
    while (atomic_load_explicit(&slot->users, memory_order_seq_cst) != 0) sched_yield();
}

static void slot_close(struct trap_region *slot) {
    atomic_fetch_add_explicit(&slot->generation, 1, memory_order_release);
}

static void slot_set(struct trap_region *slot, uintptr_t start, uintptr_t end, ioasid_mmio_handler handler,
                     void *context, uint64_t offset_base) {
    slot_open(slot);
    atomic_store_explicit(&slot->start, start, memory_order_relaxed);
    atomic_store_explicit(&slot->end, end, memory_order_relaxed);
    atomic_store_explicit(&slot->handler, handler, memory_order_relaxed);
    atomic_store_explicit(&slot->context, context, memory_order_relaxed);
    atomic_store_explicit(&slot->offset_base, offset_base, memory_order_relaxed);
    slot_close(slot);
}

static int slot_empty(struct trap_region *slot) {
    return atomic_load_explicit(&slot->start, memory_order_relaxed) ==
           atomic_load_explicit(&slot->end, memory_order_relaxed);
}

/* A free slot (under regions_lock), the limit raised to cover it; -1 when the table is full. */
static int slot_allocate(void) {
    for (unsigned index = 0; index < TRAP_SLOTS; index++) {
        if (!slot_empty(&regions[index])) continue;
        if (index >= atomic_load_explicit(&region_limit, memory_order_relaxed))
            atomic_store_explicit(&region_limit, index + 1, memory_order_release);
        return (int)index;
    }
    return -1;
}

static size_t page_size(void) {
    static _Atomic size_t cached;
    size_t size = atomic_load_explicit(&cached, memory_order_relaxed);
    if (size == 0) {
        long queried = sysconf(_SC_PAGESIZE);
        size = queried > 0 ? (size_t)queried : 4096;
        atomic_store_explicit(&cached, size, memory_order_relaxed);
    }
    return size;
}

int ioasid_trap_forget(void *address, size_t length) {
    if (atomic_load_explicit(&region_limit, memory_order_acquire) == 0) return 0;
    size_t page = page_size();
    uintptr_t first = (uintptr_t)address;
    uintptr_t last = first + ((length + page - 1) & ~(page - 1)); /* exclusive */
    if (last < first) last = UINTPTR_MAX;
    pthread_mutex_lock(&regions_lock);
    unsigned limit = atomic_load_explicit(&region_limit, memory_order_relaxed);
    unsigned splits = 0, free_slots = 0;
    for (unsigned index = 0; index < TRAP_SLOTS; index++) {
        struct trap_region *slot = &regions[index];
        if (slot_empty(slot)) {
            free_slots++;
            continue;
        }
        uintptr_t start = atomic_load_explicit(&slot->start, memory_order_relaxed);
        uintptr_t end = atomic_load_explicit(&slot->end, memory_order_relaxed);
        if (end <= first || start >= last) continue;
        if (inside_handler) { /* would wait for the handler call we are in */
            pthread_mutex_unlock(&regions_lock);
            errno = EDEADLK;
            return -1;
        }
        if (start < first && end > last) splits++;
    }
    if (splits > free_slots) {
        pthread_mutex_unlock(&regions_lock);
        errno = ENOMEM;
        return -1;
    }
    for (unsigned index = 0; index < limit; index++) {
        struct trap_region *slot = &regions[index];
        if (slot_empty(slot)) continue;
        uintptr_t start = atomic_load_explicit(&slot->start, memory_order_relaxed);
        uintptr_t end = atomic_load_explicit(&slot->end, memory_order_relaxed);
        if (end <= first || start >= last) continue;
        ioasid_mmio_handler handler = atomic_load_explicit(&slot->handler, memory_order_relaxed);
        void *context = atomic_load_explicit(&slot->context, memory_order_relaxed);
        uint64_t base = atomic_load_explicit(&slot->offset_base, memory_order_relaxed);
        if (start < first && end > last) {
            /* A hole in the middle: publish the tail first, so it is never untrapped. */
            int tail = slot_allocate();
            slot_set(&regions[tail], last, end, handler, context, base + (last - start));
            slot_set(slot, start, first, handler, context, base);
        } else if (start >= first && end <= last) {
            slot_set(slot, 0, 0, NULL, NULL, 0);
        } else if (start < first) {
            slot_set(slot, start, first, handler, context, base);
        } else {
            slot_set(slot, last, end, handler, context, base + (last - start));
        }
    }
    pthread_mutex_unlock(&regions_lock);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The program's actions for the signals we keep.
 */

enum { KEPT_SIGSEGV, KEPT_SIGBUS, KEPT_SIGILL, KEPT_COUNT };

static int kept_index(int signo) {
    switch (signo) {
    case SIGSEGV: return KEPT_SIGSEGV;
    case SIGBUS: return KEPT_SIGBUS;
    case SIGILL: return KEPT_SIGILL;
    default: return -1;
    }
}

static const int kept_signals[KEPT_COUNT] = {SIGSEGV, SIGBUS, SIGILL};

struct program_action {
    _Atomic unsigned sequence; /* seqlock: odd while written */
    struct sigaction action;
};

static struct program_action program_actions[KEPT_COUNT];
static _Atomic int handlers_installed;
static _Atomic int actions_lock;

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
static _Atomic(sigaction_fn) real_sigaction_function;

__attribute__((constructor)) static void trap_init(void) {
    void *function = dlsym(RTLD_NEXT, "sigaction");
    if (function == NULL) function = dlsym(RTLD_NEXT, "__sigaction");
    atomic_store(&real_sigaction_function, (sigaction_fn)function);
}

static int real_sigaction(int signo, const struct sigaction *action, struct sigaction *old) {
    sigaction_fn real = atomic_load_explicit(&real_sigaction_function, memory_order_acquire);
    if (real == NULL) {
        trap_init();
        real = atomic_load(&real_sigaction_function);
        if (real == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }
    return real(signo, action, old);
}

/* The spinlock over program_actions; `saved` is NULL inside our handler (all blocked already). */
static void actions_lock_take(sigset_t *saved) {
    if (saved != NULL) {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, saved);
    }
    while (atomic_exchange_explicit(&actions_lock, 1, memory_order_acquire) != 0) sched_yield();
}

static void actions_lock_give(const sigset_t *saved) {
    atomic_store_explicit(&actions_lock, 0, memory_order_release);
    if (saved != NULL) pthread_sigmask(SIG_SETMASK, saved, NULL);
}

static void program_action_write(int which, const struct sigaction *action) {
    struct program_action *entry = &program_actions[which];
    atomic_fetch_add_explicit(&entry->sequence, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    entry->action = *action;
    atomic_fetch_add_explicit(&entry->sequence, 1, memory_order_release);
}

static void program_action_read(int which, struct sigaction *action) {
    struct program_action *entry = &program_actions[which];
    for (;;) {
        unsigned before = atomic_load_explicit(&entry->sequence, memory_order_acquire);
        if (before & 1) {
            sched_yield();
            continue;
        }
        memcpy(action, &entry->action, sizeof *action);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&entry->sequence, memory_order_relaxed) == before) return;
    }
}

static void trap_signal(int signo, siginfo_t *info, void *context);

/* Gives the kernel our handler for a kept signal (under actions_lock). It runs on the
 * alternate signal stack exactly when the program's handler asked for it (a program that
 * catches stack overflow needs it; a program whose small alternate stack serves other signals
 * must not find our frame there). Every signal is blocked while it runs. */
static int install_ours(int which, int on_stack) {
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = trap_signal;
    ours.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER | (on_stack ? SA_ONSTACK : 0);
    sigfillset(&ours.sa_mask);
    sigdelset(&ours.sa_mask, SIGSEGV); /* a safe copy inside a device model may fault */
    sigdelset(&ours.sa_mask, SIGBUS);
    return real_sigaction(kept_signals[which], &ours, NULL);
}

/* Puts our handler in front of the program's for the kept signals, recording theirs. */
static int install_handlers(void) {
    if (atomic_load_explicit(&handlers_installed, memory_order_acquire)) return 0;
    sigset_t saved;
    int result = 0;
    actions_lock_take(&saved);
    if (!atomic_load_explicit(&handlers_installed, memory_order_relaxed)) {
        struct sigaction theirs[KEPT_COUNT];
        for (int which = 0; which < KEPT_COUNT && result == 0; which++) {
            if (real_sigaction(kept_signals[which], NULL, &theirs[which]) != 0) result = -1;
            else program_action_write(which, &theirs[which]);
        }
        for (int which = 0; which < KEPT_COUNT && result == 0; which++) {
            if (install_ours(which, (theirs[which].sa_flags & SA_ONSTACK) != 0) != 0) result = -1;
        }
        if (result == 0) atomic_store_explicit(&handlers_installed, 1, memory_order_release);
    }
    int saved_errno = errno;
    actions_lock_give(&saved);
    errno = saved_errno;
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * sigaction and signal: for SIGSEGV, SIGBUS and SIGILL, once our handler is installed, the
 * program's action is recorded and reported instead of being given to the kernel.
 */

int ioasid_real_sigaction(int signo, const struct sigaction *action, struct sigaction *old) {
    return real_sigaction(signo, action, old);
}

static int kept_sigaction(int signo, const struct sigaction *action, struct sigaction *old) {
    int which = kept_index(signo);
    if (which < 0) return ioasid_deferring_sigaction(signo, action, old); /* deferral.c */
    struct sigaction requested, previous;
    if (action != NULL) requested = *action; /* read the program's memory outside the lock */
    sigset_t saved;
    actions_lock_take(&saved);
    if (!atomic_load_explicit(&handlers_installed, memory_order_relaxed)) {
        int result = real_sigaction(signo, action, old);
        int saved_errno = errno;
        actions_lock_give(&saved);
        errno = saved_errno;
        return result;
    }
    program_action_read(which, &previous);
    if (action != NULL) {
        program_action_write(which, &requested);
        if ((requested.sa_flags & SA_ONSTACK) != (previous.sa_flags & SA_ONSTACK))
            (void)install_ours(which, (requested.sa_flags & SA_ONSTACK) != 0);
    }
    actions_lock_give(&saved);
    if (old != NULL) *old = previous;
    return 0;
}

IOASID_EXPORT int sigaction(int signo, const struct sigaction *action, struct sigaction *old) {
    return kept_sigaction(signo, action, old);
}

IOASID_EXPORT int __sigaction(int signo, const struct sigaction *action, struct sigaction *old) {
    return kept_sigaction(signo, action, old);
}

/* signal() with glibc's BSD semantics (the signal masked in its handler, SA_RESTART). */
static sighandler_t kept_signal(int signo, sighandler_t handler, int flags, int mask_self) {
    if (handler == SIG_ERR || signo < 1 || signo >= NSIG) {
        errno = EINVAL;
        return SIG_ERR;
    }
    struct sigaction action, old;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    if (mask_self) sigaddset(&action.sa_mask, signo);
    action.sa_flags = flags;
    if (kept_sigaction(signo, &action, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

IOASID_EXPORT sighandler_t signal(int signo, sighandler_t handler) {
    return kept_signal(signo, handler, SA_RESTART, 1);
}

IOASID_EXPORT sighandler_t bsd_signal(int signo, sighandler_t handler) { return signal(signo, handler); }
IOASID_EXPORT sighandler_t ssignal(int signo, sighandler_t handler) { return signal(signo, handler); }

/* System V semantics: reset to SIG_DFL on delivery, not masked in the handler. */
IOASID_EXPORT sighandler_t sysv_signal(int signo, sighandler_t handler) {
    return kept_signal(signo, handler, SA_RESETHAND | SA_NODEFER, 0);
}

IOASID_EXPORT sighandler_t __sysv_signal(int signo, sighandler_t handler) { return sysv_signal(signo, handler); }

/* ---------------------------------------------------------------------------------------------
 * Raw output and deterministic death.
 */

struct line {
    char text[256];
    size_t length;
};

static void line_append(struct line *line, const char *text) {
    while (*text && line->length < sizeof line->text - 1) line->text[line->length++] = *text++;
}

static void line_hex(struct line *line, uint64_t value, unsigned minimum_digits) {
    char digits[16];
    unsigned count = 0;
    do {
        digits[count++] = "0123456789abcdef"[value & 15];
        value >>= 4;
    } while (value != 0 || count < minimum_digits);
    while (count > 0 && line->length < sizeof line->text - 1) line->text[line->length++] = digits[--count];
}

static pid_t current_tid(void) { return (pid_t)syscall(SYS_gettid); }

static void unblock(int signo) {
    uint64_t mask = 1ull << (signo - 1);
    (void)syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, &mask, NULL, sizeof mask);
}

/* Kills the process with `signo`'s default action (core dump for SIGBUS). */
static _Noreturn void die_by(int signo) {
    struct sigaction default_action;
    memset(&default_action, 0, sizeof default_action);
    default_action.sa_handler = SIG_DFL;
    (void)real_sigaction(signo, &default_action, NULL);
    unblock(signo);
    (void)syscall(SYS_tgkill, getpid(), current_tid(), signo);
    for (;;) (void)syscall(SYS_exit_group, 128 + signo);
}

/* One line naming the instruction's bytes (within its page: the next page may be unmapped),
 * then death by SIGBUS. */
static _Noreturn void fail_clearly(const char *why, uint64_t rip, uint64_t address) {
    struct line line = {.length = 0};
    line_append(&line, "ioasid-preload: trapped MMIO at 0x");
    line_hex(&line, address, 1);
    line_append(&line, ": ");
    line_append(&line, why);
    line_append(&line, " at 0x");
    line_hex(&line, rip, 1);
    line_append(&line, ":");
    size_t page = page_size();
    uint64_t page_end = (rip | (page - 1)) + 1;
    for (uint64_t byte = rip; byte < rip + MMIO_MAX_INSTRUCTION && byte < page_end; byte++) {
        line_append(&line, " ");
        line_hex(&line, *(const volatile uint8_t *)byte, 2);
    }
    line_append(&line, "\n");
    (void)syscall(SYS_write, 2, line.text, line.length);
    die_by(SIGBUS);
}

/* ---------------------------------------------------------------------------------------------
 * Running the program's action.
 */

/* The signal again with its default action: either by letting the faulting instruction run
 * again (a fault the kernel raised) or by queueing it to this thread, delivered when our
 * handler returns. */
static void run_default_action(int signo, siginfo_t *info, ucontext_t *uc, int fault_again) {
    struct sigaction default_action;
    memset(&default_action, 0, sizeof default_action);
    default_action.sa_handler = SIG_DFL;
    (void)real_sigaction(signo, &default_action, NULL);
    if (fault_again) return;
    sigdelset(&uc->uc_sigmask, signo);
    siginfo_t copy = *info;
    (void)syscall(SYS_rt_tgsigqueueinfo, getpid(), current_tid(), signo, &copy);
}

/* Runs the program's action for `signo` as the kernel would have. `synthesized`: a bus error
 * from a trapped access, not a signal the kernel delivered. */
static void chain(int signo, siginfo_t *info, ucontext_t *uc, int synthesized) {
    int which = kept_index(signo);
    struct sigaction action;
    program_action_read(which, &action);
    int from_kernel = info->si_code > 0;
    int blocked = sigismember(&uc->uc_sigmask, signo) == 1;
    if (action.sa_handler == SIG_IGN && !from_kernel) return;
    if (action.sa_handler == SIG_DFL || action.sa_handler == SIG_IGN || (synthesized && blocked)) {
        /* A fault the program ignores or blocks kills it, as the kernel's forced signals do. */
        run_default_action(signo, info, uc, from_kernel && !synthesized);
        return;
    }
    if (action.sa_flags & SA_RESETHAND) {
        actions_lock_take(NULL);
        struct sigaction current;
        program_action_read(which, &current);
        if (current.sa_handler == action.sa_handler) {
            memset(&current, 0, sizeof current);
            current.sa_handler = SIG_DFL;
            program_action_write(which, &current);
        }
        actions_lock_give(NULL);
    }
    sigset_t mask = uc->uc_sigmask;
    for (int other = 1; other < NSIG; other++) {
        if (sigismember(&action.sa_mask, other) == 1) sigaddset(&mask, other);
    }
    if (!(action.sa_flags & SA_NODEFER)) sigaddset(&mask, signo);
    (void)syscall(SYS_rt_sigprocmask, SIG_SETMASK, &mask, NULL, (size_t)(_NSIG / 8));
    int copies = ioasid_sys_uaccess_note_mask(sigismember(&mask, SIGSEGV) == 1 || sigismember(&mask, SIGBUS) == 1);
    if (action.sa_flags & SA_SIGINFO) {
        action.sa_sigaction(signo, info, uc);
    } else {
        /* The kernel passes all three arguments to every handler on x86-64; so do we. */
        ((void (*)(int, siginfo_t *, void *))(void *)action.sa_handler)(signo, info, uc);
    }
    ioasid_sys_uaccess_restore_mask(copies);
}

/* ---------------------------------------------------------------------------------------------
 * Vector registers in the signal frame.
 *
 * uc_mcontext.fpregs is the FXSAVE image (XMM0-15 at byte 160). When the kernel saved with XSAVE
 * (FP_XSTATE_MAGIC1 in the software-reserved bytes at 464, which also say which components the
 * frame holds and how long it is), the XSAVE header follows at byte 512 (XSTATE_BV: the
 * components not in their init state) and then the extended components, in the standard
 * layout at the offsets CPUID leaf 0xD gives: YMM_Hi128 (2: bits 255:128 of YMM0-15), opmask
 * (5: k0-k7), ZMM_Hi256 (6: bits 511:256 of ZMM0-15), Hi16_ZMM (7: ZMM16-31 whole). A component
 * whose XSTATE_BV bit is clear is all zeros whatever its bytes say; writing into one zeroes it
 * first and sets the bit (sigreturn's XRSTOR would load the init state otherwise and drop what
 * was written). A component the instruction needs but the frame lacks fails clearly.
 */

#define FRAME_XSAVE_MAGIC 0x46505853u /* FP_XSTATE_MAGIC1, "FPXS" */
#define FRAME_XMM_OFFSET 160
#define FRAME_SOFTWARE_BYTES 464
#define FRAME_XSAVE_HEADER 512

enum { COMPONENT_SSE = 1, COMPONENT_YMM_HI128 = 2, COMPONENT_OPMASK = 5, COMPONENT_ZMM_HI256 = 6, COMPONENT_HI16_ZMM = 7 };

/* CPUID leaf 0xD per component: offset (EBX) and size (EAX); offset 0 = not asked yet. */
static _Atomic uint32_t component_offsets[8], component_sizes[8];
static _Atomic unsigned vector_length_cached; /* bytes of the widest vector register the OS enabled */

static void component_layout(unsigned component, uint32_t *offset, uint32_t *size) {
    uint32_t known = atomic_load_explicit(&component_offsets[component], memory_order_acquire);
    if (known != 0) {
        *offset = known;
        *size = atomic_load_explicit(&component_sizes[component], memory_order_relaxed);
        return;
    }
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid_max(0, NULL) >= 0xD) __cpuid_count(0xD, component, eax, ebx, ecx, edx);
    if (ebx == 0) eax = 0; /* not supported: no offset, no size */
    atomic_store_explicit(&component_sizes[component], eax, memory_order_relaxed);
    atomic_store_explicit(&component_offsets[component], ebx == 0 ? UINT32_MAX : ebx, memory_order_release);
    *offset = ebx;
    *size = eax;
}

/* MAXVL: 64 with the AVX-512 state enabled in XCR0, 32 with AVX, else 16. */
static unsigned maximum_vector_length(void) {
    unsigned length = atomic_load_explicit(&vector_length_cached, memory_order_relaxed);
    if (length != 0) return length;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    length = 16;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 27))) { /* OSXSAVE: XGETBV works */
        uint32_t low, high;
        __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
        if ((low & 0xE6) == 0xE6) length = 64;
        else if ((low & 0x6) == 0x6) length = 32;
    }
    atomic_store_explicit(&vector_length_cached, length, memory_order_relaxed);
    return length;
}

struct vector_frame {
    uint8_t *base;   /* uc_mcontext.fpregs */
    int xsave;       /* XSAVE format: the header and extended components follow */
    uint64_t holds;  /* components present (the software bytes' xfeatures) */
    uint32_t length; /* bytes of the XSAVE image (the software bytes' xstate_size) */
};

static void vector_frame_open(ucontext_t *uc, struct vector_frame *frame) {
    frame->base = (uint8_t *)uc->uc_mcontext.fpregs;
    frame->xsave = 0;
    frame->holds = frame->base != NULL ? 3 : 0; /* x87 and SSE: the FXSAVE image */
    frame->length = 512;
    if (frame->base == NULL) return;
    uint32_t magic, length;
    memcpy(&magic, frame->base + FRAME_SOFTWARE_BYTES, sizeof magic);
    if (magic != FRAME_XSAVE_MAGIC) return;
    memcpy(&frame->holds, frame->base + FRAME_SOFTWARE_BYTES + 8, sizeof frame->holds);
    memcpy(&length, frame->base + FRAME_SOFTWARE_BYTES + 16, sizeof length);
    frame->xsave = 1;
    frame->length = length;
}

/* The bytes of `component` in the frame (and their count), or NULL when the frame lacks it. */
static uint8_t *component_area(const struct vector_frame *frame, unsigned component, uint32_t *size) {
    if (component == COMPONENT_SSE) {
        if (frame->base == NULL) return NULL;
        *size = 256;
        return frame->base + FRAME_XMM_OFFSET;
    }
    if (!frame->xsave || !((frame->holds >> component) & 1)) return NULL;
    uint32_t offset;
    component_layout(component, &offset, size);
    if (*size == 0 || offset < FRAME_XSAVE_HEADER + 64 || offset + *size > frame->length) return NULL;
    return frame->base + offset;
}

static int component_in_use(const struct vector_frame *frame, unsigned component) {
    if (!frame->xsave) return 1;
    uint64_t in_use;
    memcpy(&in_use, frame->base + FRAME_XSAVE_HEADER, sizeof in_use);
    return (in_use >> component) & 1;
}

static void component_mark_written(const struct vector_frame *frame, unsigned component, uint8_t *area, uint32_t size) {
    if (!frame->xsave || component_in_use(frame, component)) return;
    memset(area, 0, size);
    uint64_t in_use;
    memcpy(&in_use, frame->base + FRAME_XSAVE_HEADER, sizeof in_use);
    in_use |= 1ull << component;
    memcpy(frame->base + FRAME_XSAVE_HEADER, &in_use, sizeof in_use);
}

/* Where bytes [16 * chunk, 16 * chunk + 16) of vector register `number` (0-31) live. */
static unsigned register_chunk(unsigned number, unsigned chunk, uint32_t *offset) {
    if (number >= 16) {
        *offset = 64 * (number - 16) + 16 * chunk;
        return COMPONENT_HI16_ZMM;
    }
    if (chunk == 0) {
        *offset = 16 * number;
        return COMPONENT_SSE;
    }
    if (chunk == 1) {
        *offset = 16 * number;
        return COMPONENT_YMM_HI128;
    }
    *offset = 32 * number + 16 * (chunk - 2);
    return COMPONENT_ZMM_HI256;
}

/* Reads bytes [0, length) of vector register `number` (length a multiple of 16). 0, or -1
 * when the frame lacks a component that holds them. */
static int vector_read(const struct vector_frame *frame, unsigned number, uint8_t *out, unsigned length) {
    for (unsigned chunk = 0; chunk < length / 16; chunk++) {
        uint32_t offset, size;
        unsigned component = register_chunk(number, chunk, &offset);
        uint8_t *area = component_area(frame, component, &size);
        if (area == NULL) return -1;
        if (component_in_use(frame, component)) memcpy(out + 16 * chunk, area + offset, 16);
        else memset(out + 16 * chunk, 0, 16);
    }
    return 0;
}

/* Writes bytes [0, length) of vector register `number`; the frame is left untouched when it
 * lacks a component (-1). */
static int vector_write(const struct vector_frame *frame, unsigned number, const uint8_t *in, unsigned length) {
    for (unsigned chunk = 0; chunk < length / 16; chunk++) {
        uint32_t offset, size;
        if (component_area(frame, register_chunk(number, chunk, &offset), &size) == NULL) return -1;
    }
    for (unsigned chunk = 0; chunk < length / 16; chunk++) {
        uint32_t offset, size;
        unsigned component = register_chunk(number, chunk, &offset);
        uint8_t *area = component_area(frame, component, &size);
        component_mark_written(frame, component, area, size);
        memcpy(area + offset, in + 16 * chunk, 16);
    }
    return 0;
}

/* The elements an EVEX move selects: all of them without an opmask. 0, or -1 when the frame
 * lacks the opmask state. */
static int selected_elements(const struct vector_frame *frame, const struct mmio_instruction *instruction,
                             uint64_t *selected) {
    unsigned elements = instruction->opmask != 0 ? instruction->size / instruction->element_size : 1;
    uint64_t all = elements >= 64 ? ~0ull : (1ull << elements) - 1;
    *selected = all;
    if (instruction->opmask == 0) return 0;
    uint32_t size;
    uint8_t *area = component_area(frame, COMPONENT_OPMASK, &size);
    if (area == NULL) return -1;
    uint64_t mask = 0;
    if (component_in_use(frame, COMPONENT_OPMASK)) memcpy(&mask, area + 8 * instruction->opmask, sizeof mask);
    *selected = mask & all;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The trapped access.
 */

static const int gpr_slots[16] = {
    REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
    REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15,
};

static inline uint64_t *gpr(ucontext_t *uc, unsigned number) {
    return (uint64_t *)&uc->uc_mcontext.gregs[gpr_slots[number & 15]];
}

/* What went wrong in perform(): the device's bus error, or a bad normal-memory operand. */
enum { PERFORMED = 0, BUS_ERROR = -1, BAD_MEMORY = -2 };

/* Copies of the program's normal memory that cannot fault here: the preload's safe copy (a
 * fault in it is fixed up by this very handler), else process_vm_readv/writev. */
static int copy_in(void *to, uint64_t from, size_t length) { return ioasid_sys_copy_in(to, from, length) == 0 ? 0 : -1; }
static int copy_out(uint64_t to, const void *from, size_t length) { return ioasid_sys_copy_out(to, from, length) == 0 ? 0 : -1; }

/* The first byte of [address, address + length) that the program cannot read (or write):
 * the page boundary inside it when the first page is fine, else `address`. */
static uint64_t first_bad_byte(uint64_t address, size_t length, int write) {
    uint64_t boundary = (address | (page_size() - 1)) + 1;
    if (boundary == 0 || boundary >= address + length) return address;
    if (write) return ioasid_sys_safe_probe((const void *)(address & ~(page_size() - 1)), 1, 1) == 0 ? boundary : address;
    uint8_t probe[64];
    size_t head = boundary - address;
    return head <= sizeof probe && copy_in(probe, address, head) == 0 ? boundary : address;
}

/* Writes an element to normal memory as one store would: nothing when either page of an
 * element that straddles a page boundary refuses the write. */
static int copy_out_element(uint64_t to, const void *from, size_t length, uint64_t *bad) {
    uint64_t boundary = (to | (page_size() - 1)) + 1;
    if (boundary != 0 && boundary < to + length) {
        if (ioasid_sys_safe_probe((const void *)(to & ~(page_size() - 1)), 1, 1) == -EFAULT) {
            *bad = to;
            return -1;
        }
        if (ioasid_sys_safe_probe((const void *)boundary, 1, 1) == -EFAULT) {
            *bad = boundary;
            return -1;
        }
    }
    if (copy_out(to, from, length) == 0) return 0;
    *bad = first_bad_byte(to, length, 1);
    return -1;
}

/* Calls the handler for the selected elements of a masked vector access: each run of adjacent
 * selected elements, lowest first, as naturally aligned accesses of at most 8 bytes. */
static int masked_access(const struct trap_hit *hit, uint64_t offset, uint64_t address, uint64_t selected,
                         unsigned elements, unsigned element_size, int is_write, uint8_t *data) {
    unsigned element = 0;
    while (element < elements) {
        if (!((selected >> element) & 1)) {
            element++;
            continue;
        }
        unsigned first = element;
        while (element < elements && ((selected >> element) & 1)) element++;
        unsigned at = first * element_size, end = element * element_size;
        while (at < end) {
            unsigned piece = 8;
            while (piece > end - at || ((address + at) & (piece - 1)) != 0) piece >>= 1;
            if (hit->handler(hit->context, offset + at, piece, is_write, data + at) != 0) return BUS_ERROR;
            at += piece;
        }
    }
    return PERFORMED;
}

/* A vector load or store (legacy SSE, VEX, EVEX). */
static int perform_vector(const struct mmio_instruction *instruction, ucontext_t *uc, const struct trap_hit *hit,
                          uint64_t offset, uint64_t rip, uint64_t address) {
    uint8_t data[64] __attribute__((aligned(64)));
    uint8_t value[64] __attribute__((aligned(64)));
    unsigned size = instruction->size, number = instruction->register_number;
    unsigned rounded = (size + 15) & ~15u;
    struct vector_frame frame;
    vector_frame_open(uc, &frame);
    if (frame.base == NULL) fail_clearly("no vector state in the signal frame", rip, address);
    uint64_t selected;
    if (selected_elements(&frame, instruction, &selected) != 0)
        fail_clearly("the signal frame lacks the opmask state", rip, address);
    unsigned elements = instruction->opmask != 0 ? size / instruction->element_size : 1;
    int whole = instruction->opmask == 0 || selected == (elements >= 64 ? ~0ull : (1ull << elements) - 1);
    memset(data, 0, sizeof data);
    memset(value, 0, sizeof value);

    if (instruction->operation == MMIO_STORE) {
        if (vector_read(&frame, number, value, rounded) != 0)
            fail_clearly("the signal frame lacks the state of the stored register", rip, address);
        if (whole) return hit->handler(hit->context, offset, size, 1, value) != 0 ? BUS_ERROR : PERFORMED;
        return masked_access(hit, offset, address, selected, elements, instruction->element_size, 1, value);
    }

    if (whole) {
        if (hit->handler(hit->context, offset, size, 0, data) != 0) return BUS_ERROR;
    } else if (masked_access(hit, offset, address, selected, elements, instruction->element_size, 0, data) != 0) {
        return BUS_ERROR;
    }
    unsigned length;
    if (instruction->vector_encoding == MMIO_VECTOR_LEGACY) {
        /* Legacy SSE writes the low 128 bits only (MOVD/MOVQ/MOVSS/MOVSD zero the rest of them). */
        length = 16;
        if (vector_read(&frame, number, value, 16) != 0) fail_clearly("no XMM state in the signal frame", rip, address);
        if (instruction->zero_upper_xmm) memset(value, 0, 16);
        memcpy(value, data, size);
    } else {
        /* VEX and EVEX zero every bit above the loaded ones, up to MAXVL; a masked EVEX load
         * keeps (merging) or zeroes ({z}) the elements it did not select. */
        length = maximum_vector_length();
        if (!whole && !instruction->zeroing && vector_read(&frame, number, value, rounded) != 0)
            fail_clearly("the signal frame lacks the state of the loaded register", rip, address);
        for (unsigned element = 0; element < elements; element++) {
            unsigned width = whole ? size : instruction->element_size, at = element * width;
            if (whole || ((selected >> element) & 1)) memcpy(value + at, data + at, width);
            else if (instruction->zeroing) memset(value + at, 0, width);
        }
        memset(value + size, 0, sizeof value - size);
    }
    if (vector_write(&frame, number, value, length) != 0)
        fail_clearly("the signal frame lacks the state of the loaded register", rip, address);
    return PERFORMED;
}

/* Performs the decoded instruction through the handler: PERFORMED; BUS_ERROR when the handler
 * reported one (then no register or flag has changed); BAD_MEMORY when MOVDIR64B's source is not
 * readable (*bad: the address). */
static int perform(const struct mmio_instruction *instruction, ucontext_t *uc, const struct trap_hit *hit,
                   uint64_t offset, uint64_t source_address, uint64_t rip, uint64_t address, uint64_t *bad) {
    uint8_t data[64] __attribute__((aligned(64)));
    unsigned size = instruction->size;
    void *context = hit->context;
    ioasid_mmio_handler handler = hit->handler;
    if (instruction->register_kind == MMIO_REGISTER_VECTOR)
        return perform_vector(instruction, uc, hit, offset, rip, address);
    uint64_t *reg = instruction->register_kind == MMIO_REGISTER_GPR ? gpr(uc, instruction->register_number) : NULL;
    uint64_t value = 0;
    memset(data, 0, sizeof data);

    switch (instruction->operation) {
    case MMIO_LOAD:
        if (handler(context, offset, size, 0, data) != 0) return BUS_ERROR;
        memcpy(&value, data, size);
        value = ioasid_mmio_extend(value, size, instruction->extension);
        *reg = ioasid_mmio_write_register(*reg, value, instruction->register_width, instruction->high_byte);
        return PERFORMED;

    case MMIO_STORE:
        if (instruction->has_immediate) {
            memcpy(data, &instruction->immediate, size);
        } else {
            value = ioasid_mmio_read_register(*reg, instruction->register_width, instruction->high_byte);
            memcpy(data, &value, size);
        }
        return handler(context, offset, size, 1, data) != 0 ? BUS_ERROR : PERFORMED;

    case MMIO_EXCHANGE: {
        if (handler(context, offset, size, 0, data) != 0) return BUS_ERROR;
        uint64_t old = 0;
        memcpy(&old, data, size);
        value = ioasid_mmio_read_register(*reg, instruction->register_width, instruction->high_byte);
        memcpy(data, &value, size);
        if (handler(context, offset, size, 1, data) != 0) return BUS_ERROR;
        *reg = ioasid_mmio_write_register(*reg, old, instruction->register_width, instruction->high_byte);
        return PERFORMED;
    }

    case MMIO_ALU: {
        if (handler(context, offset, size, 0, data) != 0) return BUS_ERROR;
        uint64_t memory = 0, source = 0;
        memcpy(&memory, data, size);
        if (instruction->has_immediate) {
            source = instruction->immediate;
        } else if (reg != NULL) {
            source = ioasid_mmio_read_register(*reg, instruction->register_width, instruction->high_byte);
        }
        uint64_t flags = (uint64_t)uc->uc_mcontext.gregs[REG_EFL];
        int writes = ioasid_mmio_alu_writes(instruction->alu);
        if (instruction->memory_is_source) {
            uint64_t result = ioasid_mmio_alu(instruction->alu, size, source, memory, &flags);
            if (writes) *reg = ioasid_mmio_write_register(*reg, result, instruction->register_width, instruction->high_byte);
        } else {
            uint64_t result = ioasid_mmio_alu(instruction->alu, size, memory, source, &flags);
            if (writes) {
                memcpy(data, &result, size);
                if (handler(context, offset, size, 1, data) != 0) return BUS_ERROR;
            }
        }
        uc->uc_mcontext.gregs[REG_EFL] = (greg_t)flags;
        return PERFORMED;
    }

    case MMIO_COPY64:
        if (copy_in(data, source_address, 64) != 0) {
            *bad = first_bad_byte(source_address, 64, 0);
            return BAD_MEMORY;
        }
        return handler(context, offset, 64, 1, data) != 0 ? BUS_ERROR : PERFORMED;
    }
    fail_clearly("cannot emulate the instruction", rip, address);
}

/* ---------------------------------------------------------------------------------------------
 * String instructions: MOVS and STOS, with or without REP.
 *
 * Each element is a read of the source (the region's handler, or a fault-safe copy of normal
 * memory) then a write of the destination (the same way), RSI/RDI stepped by the element size
 * up or down as DF says and RCX counted down after each, in 32 bits under the 67 prefix (the
 * registers are then written as 32-bit registers, zero-extended, as the hardware does). At most
 * STRING_CHUNK elements are done per fault, and the emulation stops early once an element
 * touches no region after one did (the hardware does the rest faster): RIP stays at the
 * instruction, which restarts from the registers as an interrupted REP does. The same holds when
 * a region is being changed while this handler holds another one (waiting could deadlock with
 * the writer, who waits for us): the restart waits instead.
 */

#define STRING_CHUNK 4096

struct string_operand {
    struct trap_hit hit;
    int held;
};

/* 1 when [address, address + size) is in a region (its hit held in `operand`), 0 when it is in
 * normal memory, -1 when the caller must stop (see above). An element across a region's edge
 * fails clearly. */
static int string_locate(struct string_operand *operand, const struct string_operand *other, uint64_t address,
                         unsigned size, uint64_t rip) {
    if (operand->held && address >= operand->hit.start && address < operand->hit.end) {
        if (address + size > operand->hit.end) fail_clearly("the access crosses the end of the trapped region", rip, address);
        return 1;
    }
    if (operand->held) {
        trap_release(&operand->hit);
        operand->held = 0;
    }
    int may_wait = !other->held;
    int found = trap_lookup_waiting((uintptr_t)address, &operand->hit, may_wait);
    if (found < 0) return -1;
    if (found) {
        operand->held = 1;
        if (address + size > operand->hit.end) fail_clearly("the access crosses the end of the trapped region", rip, address);
        return 1;
    }
    uint64_t last = address + size - 1;
    if ((last & ~(uint64_t)(page_size() - 1)) != (address & ~(uint64_t)(page_size() - 1))) {
        struct trap_hit tail;
        found = trap_lookup_waiting((uintptr_t)last, &tail, may_wait);
        if (found < 0) return -1;
        if (found) {
            trap_release(&tail);
            fail_clearly("the access crosses into a trapped region", rip, address);
        }
    }
    return 0;
}

/* Whether `fault_address` is one of the elements the string instruction has left to do. */
static int string_covers(const struct mmio_instruction *instruction, ucontext_t *uc, uint64_t segment_base,
                         uint64_t fault_address) {
    uint64_t width = instruction->address.address32 ? 0xFFFFFFFFull : ~0ull;
    uint64_t count = instruction->repeat ? (*gpr(uc, 1) & width) : 1;
    int down = (uc->uc_mcontext.gregs[REG_EFL] & 0x400) != 0;
    unsigned size = instruction->size;
    uint64_t starts[2] = {*gpr(uc, 7) & width, (*gpr(uc, 6) & width) + segment_base};
    for (unsigned operand = 0; operand < (instruction->operation == MMIO_MOVS ? 2u : 1u); operand++) {
        uint64_t distance = down ? starts[operand] + size - 1 - fault_address : fault_address - starts[operand];
        if (count != 0 && distance / size < count) return 1;
    }
    return 0;
}

/* PERFORMED (*finished when no element is left), BUS_ERROR or BAD_MEMORY with *bad the address;
 * the registers tell which elements were done. */
static int perform_string(const struct mmio_instruction *instruction, ucontext_t *uc, uint64_t rip,
                          uint64_t segment_base, uint64_t *bad, int *finished) {
    unsigned size = instruction->size;
    int address32 = instruction->address.address32, moves = instruction->operation == MMIO_MOVS;
    uint64_t width = address32 ? 0xFFFFFFFFull : ~0ull;
    uint64_t *rcx = gpr(uc, 1), *rsi = gpr(uc, 6), *rdi = gpr(uc, 7);
    uint64_t step = (uc->uc_mcontext.gregs[REG_EFL] & 0x400) ? (uint64_t)0 - size : size;
    uint64_t count = instruction->repeat ? (*rcx & width) : 1;
    uint64_t stored = *gpr(uc, 0), done = 0;
    struct string_operand source = {.held = 0}, destination = {.held = 0};
    int result = PERFORMED, touched = 0;

    while (done < count && done < STRING_CHUNK) {
        uint64_t from = (*rsi & width) + segment_base, to = *rdi & width;
        uint8_t data[8];
        int from_region = 0;
        if (moves && (from_region = string_locate(&source, &destination, from, size, rip)) < 0) break;
        int to_region = string_locate(&destination, &source, to, size, rip);
        if (to_region < 0) break;
        if (!from_region && !to_region && touched) break;
        if (!moves) {
            memcpy(data, &stored, size);
        } else if (from_region) {
            if (source.hit.handler(source.hit.context, from - source.hit.start + source.hit.offset_base, size, 0, data) != 0) {
                result = BUS_ERROR;
                *bad = from;
                break;
            }
        } else if (copy_in(data, from, size) != 0) {
            result = BAD_MEMORY;
            *bad = first_bad_byte(from, size, 0);
            break;
        }
        if (to_region) {
            if (destination.hit.handler(destination.hit.context, to - destination.hit.start + destination.hit.offset_base,
                                        size, 1, data) != 0) {
                result = BUS_ERROR;
                *bad = to;
                break;
            }
        } else if (copy_out_element(to, data, size, bad) != 0) {
            result = BAD_MEMORY;
            break;
        }
        touched |= from_region | to_region;
        done++;
        if (moves) *rsi = address32 ? (uint32_t)(*rsi + step) : *rsi + step;
        *rdi = address32 ? (uint32_t)(*rdi + step) : *rdi + step;
        if (instruction->repeat) *rcx = address32 ? (uint32_t)(count - done) : count - done;
    }
    if (source.held) trap_release(&source.hit);
    if (destination.held) trap_release(&destination.hit);
    *finished = result == PERFORMED && done == count;
    return result;
}

/* The program's SIGSEGV for a bad normal-memory operand of a trapped instruction, as the
 * hardware would have raised it: si_addr the first bad byte, SEGV_MAPERR when nothing is mapped
 * there (mincore says ENOMEM), else SEGV_ACCERR; RIP at the instruction. */
static void raise_segv(ucontext_t *uc, uint64_t address) {
    unsigned char residency;
    uint64_t page = address & ~(uint64_t)(page_size() - 1);
    long mapped = syscall(SYS_mincore, (void *)page, page_size(), &residency);
    siginfo_t fault;
    memset(&fault, 0, sizeof fault);
    fault.si_signo = SIGSEGV;
    fault.si_code = mapped != 0 && errno == ENOMEM ? SEGV_MAPERR : SEGV_ACCERR;
    fault.si_addr = (void *)address;
    chain(SIGSEGV, &fault, uc, 1);
}

static void raise_bus_error(ucontext_t *uc, uint64_t address) {
    siginfo_t bus_error;
    memset(&bus_error, 0, sizeof bus_error);
    bus_error.si_signo = SIGBUS;
    bus_error.si_code = BUS_ADRERR;
    bus_error.si_addr = (void *)address;
    chain(SIGBUS, &bus_error, uc, 1);
}

/* MOVDIR64B or MOVDIRI at `code`? Reads only the bytes those encodings have. */
static int is_direct_store(const uint8_t *code) {
    unsigned position = 0;
    while (position < MMIO_MAX_INSTRUCTION - 3) {
        uint8_t byte = code[position];
        if (byte == 0x66 || byte == 0x67 || byte == 0x2E || byte == 0x3E || byte == 0x26 || byte == 0x36 ||
            byte == 0x64 || byte == 0x65 || (byte & 0xF0) == 0x40) {
            position++;
            continue;
        }
        break;
    }
    return code[position] == 0x0F && code[position + 1] == 0x38 &&
           (code[position + 2] == 0xF8 || code[position + 2] == 0xF9);
}

/* Handles a fault at `fault_address` (SIGSEGV) or a #UD (SIGILL, fault_address 0). Returns 1
 * when the access was a trapped one (done, or a bus error or bad operand passed on), 0 when it
 * is not ours. */
static int trap_access(int signo, ucontext_t *uc, uintptr_t fault_address) {
    uint64_t rip = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
    const uint8_t *code = (const uint8_t *)rip;
    struct mmio_instruction instruction;
    struct trap_hit hit;
    int have_hit = 0;

    if (signo == SIGSEGV) {
        if (!trap_lookup(fault_address, &hit)) return 0;
        if (fault_address - rip < MMIO_MAX_INSTRUCTION) { /* fetching code from a region: not an access */
            trap_release(&hit);
            return 0;
        }
        have_hit = 1;
        if (ioasid_mmio_decode(code, &instruction) != 0)
            fail_clearly("unknown instruction", rip, fault_address);
    } else {
        if (!is_direct_store(code) || ioasid_mmio_decode(code, &instruction) != 0) return 0;
    }

    uint64_t segment_base = 0;
    if (instruction.address.segment != MMIO_SEGMENT_DEFAULT) {
        int code_number = instruction.address.segment == MMIO_SEGMENT_FS ? ARCH_GET_FS : ARCH_GET_GS;
        (void)syscall(SYS_arch_prctl, code_number, &segment_base);
    }
    uint64_t bad = 0;

    if (instruction.operation == MMIO_MOVS || instruction.operation == MMIO_STOS) {
        trap_release(&hit); /* perform_string looks each element up */
        if (!string_covers(&instruction, uc, segment_base, fault_address))
            fail_clearly("the decoded address does not match the fault", rip, fault_address);
        int finished = 0;
        inside_handler = 1;
        int result = perform_string(&instruction, uc, rip, segment_base, &bad, &finished);
        inside_handler = 0;
        if (result == PERFORMED && finished) uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(rip + instruction.length);
        else if (result == BUS_ERROR) raise_bus_error(uc, bad);
        else if (result == BAD_MEMORY) raise_segv(uc, bad);
        return 1;
    }

    uint64_t registers[16];
    for (unsigned number = 0; number < 16; number++) registers[number] = *gpr(uc, number);
    uint64_t address = ioasid_mmio_effective_address(&instruction, registers, rip, segment_base);
    uint64_t source_address = 0;
    if (instruction.operation == MMIO_COPY64) {
        source_address = address;
        address = registers[instruction.copy_destination];
        if (instruction.address.address32) address = (uint32_t)address;
    }

    if (!have_hit) { /* SIGILL: only a direct store into a region is ours */
        if (!trap_lookup((uintptr_t)address, &hit)) return 0;
    } else if (fault_address < address || fault_address - address >= instruction.size) {
        fail_clearly("the decoded address does not match the fault", rip, fault_address);
    }
    /* A masked EVEX move touches only its selected elements: they must be in the region. */
    uint64_t first = address, end = address + instruction.size;
    if (instruction.opmask != 0) {
        struct vector_frame frame;
        uint64_t selected;
        vector_frame_open(uc, &frame);
        if (selected_elements(&frame, &instruction, &selected) != 0)
            fail_clearly("the signal frame lacks the opmask state", rip, address);
        if (selected == 0) fail_clearly("a masked move with no element selected faulted", rip, address);
        first = address + (uint64_t)__builtin_ctzll(selected) * instruction.element_size;
        end = address + (uint64_t)(64 - __builtin_clzll(selected)) * instruction.element_size;
    }
    if (first < hit.start || end > hit.end)
        fail_clearly("the access crosses the end of the trapped region", rip, address);
    if (instruction.operation == MMIO_COPY64 && (address & 63) != 0)
        fail_clearly("MOVDIR64B destination is not 64-byte aligned", rip, address);

    inside_handler = 1;
    int result = perform(&instruction, uc, &hit, address - hit.start + hit.offset_base, source_address, rip, address, &bad);
    inside_handler = 0;
    trap_release(&hit);

    if (result == PERFORMED) uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(rip + instruction.length);
    else if (result == BUS_ERROR) raise_bus_error(uc, address);
    else raise_segv(uc, bad);
    return 1;
}

static void trap_signal(int signo, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    if ((signo == SIGSEGV || signo == SIGBUS) && ioasid_sys_uaccess_fixup(context)) return; /* a safe copy's fault */
    int saved_errno = errno;
    int handled = 0;
    if (info->si_code > 0 && atomic_load_explicit(&region_limit, memory_order_acquire) != 0 &&
        (signo == SIGSEGV || signo == SIGILL)) {
        handled = trap_access(signo, uc, (uintptr_t)info->si_addr);
    }
    if (!handled && !ioasid_defer_if_inside(signo, info)) chain(signo, info, uc, 0);
    errno = saved_errno;
}

/* ---------------------------------------------------------------------------------------------
 * The API.
 */

IOASID_EXPORT void *ioasid_trap_map(size_t length, void *hint, ioasid_mmio_handler handler, void *context) {
    size_t page = page_size();
    if (length == 0 || length % page != 0 || handler == NULL || ((uintptr_t)hint % page) != 0) {
        errno = EINVAL;
        return MAP_FAILED;
    }
    if (inside_handler) { /* a writer may hold regions_lock while it waits for this handler */
        errno = EDEADLK;
        return MAP_FAILED;
    }
    if (install_handlers() != 0) return MAP_FAILED;
    ioasid_sys_uaccess_enable(); /* our handler fixes up safe copies: string operands use them */
    ioasid_sys_mappings_changing();
    long mapped = syscall(SYS_mmap, hint, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0L);
    ioasid_sys_mappings_changing();
    if (mapped == -1) return MAP_FAILED;
    void *address = (void *)mapped;
    pthread_mutex_lock(&regions_lock);
    int index = slot_allocate();
    if (index < 0) {
        pthread_mutex_unlock(&regions_lock);
        (void)ioasid_sys_munmap(address, length);
        errno = ENOMEM;
        return MAP_FAILED;
    }
    slot_set(&regions[index], (uintptr_t)address, (uintptr_t)address + length, handler, context, 0);
    pthread_mutex_unlock(&regions_lock);
    return address;
}

IOASID_EXPORT int ioasid_trap_unmap(void *address, size_t length) {
    if (length == 0 || ((uintptr_t)address % page_size()) != 0) {
        errno = EINVAL;
        return -1;
    }
    if (ioasid_trap_forget(address, length) != 0) return -1;
    long result = ioasid_sys_munmap(address, length);
    if (result < 0) {
        errno = (int)-result;
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Safe copies of the program's memory (ioasid_sys_uaccess.h): our handler fixes up their faults.
 */

int ioasid_trap_guard_copies(void) {
    if (install_handlers() != 0) return -1;
    ioasid_sys_uaccess_enable();
    return 0;
}

/* sigprocmask and pthread_sigmask: the mask the thread ends up with tells the safe copies
 * whether a fault can be caught here. */
typedef int (*sigmask_fn)(int, const sigset_t *, sigset_t *);

static int noted_sigmask(const char *name, _Atomic(sigmask_fn) *cache, int errno_style, int how,
                         const sigset_t *set, sigset_t *old) {
    sigmask_fn real = atomic_load_explicit(cache, memory_order_acquire);
    if (real == NULL) {
        real = (sigmask_fn)dlsym(RTLD_NEXT, name);
        if (real == NULL) return errno_style ? ENOSYS : (errno = ENOSYS, -1);
        atomic_store_explicit(cache, real, memory_order_release);
    }
    sigset_t before, requested;
    if (set != NULL) requested = *set; /* the program's memory, read once */
    int result = real(how, set != NULL ? &requested : NULL, &before);
    if (result != 0) return result;
    if (set != NULL) {
        sigset_t after = before;
        for (int signo = 1; signo < NSIG; signo++) {
            int member = sigismember(&requested, signo) == 1;
            if (how == SIG_SETMASK) {
                if (member) sigaddset(&after, signo); else sigdelset(&after, signo);
            } else if (member) {
                if (how == SIG_BLOCK) sigaddset(&after, signo); else sigdelset(&after, signo);
            }
        }
        (void)ioasid_sys_uaccess_note_mask(sigismember(&after, SIGSEGV) == 1 || sigismember(&after, SIGBUS) == 1);
    }
    if (old != NULL) *old = before;
    return 0;
}

static _Atomic(sigmask_fn) real_sigprocmask_function;
static _Atomic(sigmask_fn) real_pthread_sigmask_function;

IOASID_EXPORT int sigprocmask(int how, const sigset_t *set, sigset_t *old) {
    return noted_sigmask("sigprocmask", &real_sigprocmask_function, 0, how, set, old);
}

IOASID_EXPORT int pthread_sigmask(int how, const sigset_t *set, sigset_t *old) {
    return noted_sigmask("pthread_sigmask", &real_pthread_sigmask_function, 1, how, set, old);
}

/* siglongjmp and longjmp restore the mask saved by sigsetjmp without going through
 * sigprocmask: note it first (a jump out of a handler leaves the handler's mask otherwise).
 * A jump that restores no mask leaves the thread's state as it is. Resolved in a constructor:
 * a jump may leave a signal handler, where dlsym is not safe. */
typedef void (*longjmp_fn)(struct __jmp_buf_tag *, int);
static longjmp_fn real_siglongjmp_function, real_longjmp_function, real_longjmp_chk_function;

__attribute__((constructor)) static void resolve_jumps(void) {
    real_siglongjmp_function = (longjmp_fn)dlsym(RTLD_NEXT, "siglongjmp");
    real_longjmp_function = (longjmp_fn)dlsym(RTLD_NEXT, "longjmp");
    real_longjmp_chk_function = (longjmp_fn)dlsym(RTLD_NEXT, "__longjmp_chk");
}

static void note_jump(struct __jmp_buf_tag *env) {
    if (env->__mask_was_saved)
        (void)ioasid_sys_uaccess_note_mask(sigismember(&env->__saved_mask, SIGSEGV) == 1 ||
                                           sigismember(&env->__saved_mask, SIGBUS) == 1);
}

static _Noreturn void jump(longjmp_fn real, struct __jmp_buf_tag *env, int value) {
    note_jump(env);
    if (real == NULL) real = real_siglongjmp_function;
    if (real == NULL) abort();
    real(env, value);
    abort();
}

IOASID_EXPORT _Noreturn void siglongjmp(sigjmp_buf env, int value) { jump(real_siglongjmp_function, env, value); }
IOASID_EXPORT _Noreturn void longjmp(jmp_buf env, int value) { jump(real_longjmp_function, env, value); }
IOASID_EXPORT _Noreturn void __longjmp_chk(sigjmp_buf env, int value) { jump(real_longjmp_chk_function, env, value); }
