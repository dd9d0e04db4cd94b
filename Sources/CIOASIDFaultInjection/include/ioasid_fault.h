/*
 * Per-thread fault-injection state: the fail-nth countdown of the calling thread and whether
 * user fault rules apply to the call it is making. One 64-bit thread-local word; an injection
 * point that finds it zero (nothing armed) costs one thread-local load and one branch.
 *
 * The word's low 32 bits are the fail-nth countdown (as the kernel's task->fail_nth: 0 off, N: the
 * Nth injection point reached from now on fails, once); the high 32 bits are non-zero while the
 * engine runs a call to which user rules (`ioasid run --fail`) may apply.
 */
#ifndef IOASID_FAULT_H
#define IOASID_FAULT_H

#include <stdint.h>

extern _Thread_local uint64_t ioasid_fault_thread_word;

/* Whether anything is armed on this thread (the hot-path test). */
static inline int ioasid_fault_armed(void) {
    return __builtin_expect(ioasid_fault_thread_word != 0, 0);
}

/* The fail-nth countdown of this thread (what reading fail-nth shows). */
static inline uint32_t ioasid_fault_nth(void) {
    return (uint32_t)ioasid_fault_thread_word;
}

/* Arms (N > 0) or disarms (0) this thread's fail-nth countdown. */
static inline void ioasid_fault_set_nth(uint32_t n) {
    ioasid_fault_thread_word = (ioasid_fault_thread_word & ~(uint64_t)0xffffffffu) | n;
}

/* Counts one injection point against the countdown: 1 when this point is the one that fails
 * (the countdown is then 0: fired), 0 otherwise. */
static inline int ioasid_fault_nth_step(void) {
    uint32_t n = (uint32_t)ioasid_fault_thread_word;
    if (n == 0) return 0;
    n -= 1;
    ioasid_fault_set_nth(n);
    return n == 0;
}

/* Whether user rules apply to the call this thread is making. */
static inline int ioasid_fault_rules_in_call(void) {
    return (ioasid_fault_thread_word >> 32) != 0;
}

/* Marks the start (1) or the end (0) of a call to which user rules apply. */
static inline void ioasid_fault_set_rules_in_call(int on) {
    ioasid_fault_thread_word = (ioasid_fault_thread_word & 0xffffffffu) | ((uint64_t)(on != 0) << 32);
}

#endif /* IOASID_FAULT_H */
