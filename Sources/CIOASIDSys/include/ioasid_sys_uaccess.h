/*
 * Copies of the program's memory that survive a bad pointer without a system call.
 *
 * The kernel reads and writes user memory with a copy routine whose faults it recognises and
 * turns into -EFAULT. This is the same technique for a library that lives inside the program: one
 * copy instruction (`rep movsb`) is the only place that touches the program's memory; when it
 * faults (SIGSEGV, or SIGBUS past the end of a truncated file), the signal handler asks
 * ioasid_sys_uaccess_fixup() whether the fault is that instruction's and, if so, resumes at a
 * return path that reports the bytes not copied.
 *
 * Who installs the handler: the preload (its SIGSEGV/SIGBUS handler, which also serves trapped
 * MMIO and keeps the program's own handlers working), or ioasid_sys_uaccess_install() for a Swift
 * program that uses the library in-process. Until one of them calls
 * ioasid_sys_uaccess_enable(), ioasid_sys_safe_copy() declines and the callers copy with
 * process_vm_readv/writev (one system call each), as before.
 *
 * A fault on a thread that blocks SIGSEGV or SIGBUS cannot be caught (the kernel kills the
 * process instead), so each thread's mask is known: learned with one rt_sigprocmask the first
 * time the thread copies, then kept up to date by whoever sees the mask change (the preload's
 * sigprocmask/pthread_sigmask, and the span of a program's signal handler) through
 * ioasid_sys_uaccess_note_mask(). Where faults are blocked the copy declines too.
 */
#ifndef IOASID_SYS_UACCESS_H
#define IOASID_SYS_UACCESS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Copies `length` bytes from `from` to `to`, either of which may be a bad pointer. 0 when every
 * byte was copied; -EFAULT (14) when a fault stopped it (some bytes may have been copied);
 * -EAGAIN (11) when no fault can be caught on this thread now (no handler, faults blocked): the
 * caller copies another way. */
long ioasid_sys_safe_copy(void *to, const void *from, size_t length);

/* Touches one byte of each of `pages` pages from `start` (page aligned), as the CPU would use
 * them: a load, or for `write` a write that changes nothing (a locked OR of 0). Faults pages in
 * as a first access does. 0 when every page took the access; -EFAULT when one faulted
 * (unmapped, PROT_NONE, read-only for a write, SIGBUS past the end of a file); -EAGAIN when no
 * fault can be caught on this thread now. */
long ioasid_sys_safe_probe(const void *start, size_t pages, int write);

/* For a SIGSEGV/SIGBUS handler: 1 when the fault described by `ucontext` (a ucontext_t *) is the
 * safe copy's or the safe probe's, after moving its instruction pointer to their error return; 0 otherwise
 * (nothing changed). Async-signal-safe. */
int ioasid_sys_uaccess_fixup(void *ucontext);

/* A handler that calls ioasid_sys_uaccess_fixup() for SIGSEGV and SIGBUS is in place: safe
 * copies may now fault. */
void ioasid_sys_uaccess_enable(void);

/* The calling thread's signal mask changed: `blocked` is non-zero when it now blocks SIGSEGV or
 * SIGBUS. Returns the previous state (for a caller that restores it): 0 unknown, 1 deliverable,
 * 2 blocked. Async-signal-safe. */
int ioasid_sys_uaccess_note_mask(int blocked);

/* Restores a state returned by ioasid_sys_uaccess_note_mask(). */
void ioasid_sys_uaccess_restore_mask(int state);

/* For a program that uses the library in-process, without the preload: installs a SIGSEGV and a
 * SIGBUS handler that fix up safe copies and pass every other signal to the action that was
 * installed before (the handler, or the default action), then enables safe copies. 0 or -errno.
 * A program that installs its own handlers afterwards must call ioasid_sys_uaccess_fixup() from
 * them first. */
int ioasid_sys_uaccess_install(void);

#ifdef __cplusplus
}
#endif

#endif
