/*
 * The kernel's pin check on this process's memory, and the spans it already passed.
 *
 * Before a device may use user memory the kernel pins it, and refuses (EFAULT) a page that is
 * unmapped, PROT_NONE, read-only for a writeable map, or not ordinary memory (a device's I/O
 * mapping such as a VFIO BAR, secret memory). ioasid_sys_check_range() asks the kernel the
 * same question with madvise(MADV_POPULATE_WRITE/READ), which applies those rules and faults
 * the pages in; it walks every page, so it costs a system call plus about 125 ns per page.
 *
 * The spans already checked. Whether a span *could* be pinned changes in two ways only:
 *   - the memory becomes inaccessible to the CPU too (munmap, mprotect, a guard region, a file
 *     truncated under a shared mapping, a poisoned page): a touch of each page from a fault-safe
 *     probe (ioasid_sys_safe_probe) sees it, without a system call;
 *   - another mapping takes the span's place (mmap, mremap): only that can bring memory the CPU
 *     may use but the kernel will not pin (a device mapping, memfd_secret memory).
 * So once someone reports every mmap, munmap and mremap of the program (the preload does, and
 * calls ioasid_sys_pinnable_watch() to say so), a writeable span that passed the populate is
 * remembered, and a later writeable check of pages inside it is answered by the probe, a write
 * access to one byte per page that changes nothing and faults the page in as the populate
 * would. A probe that faults is never the answer: the populate is asked again. Any reported
 * change of the mappings, anywhere, forgets every span (ioasid_sys_mappings_changing, called
 * before and after the change: one atomic increment, safe in a signal handler). A mapping made
 * with a system call the reporter cannot see (syscall(SYS_mmap), or a library's inlined system
 * call) over a remembered span is missed: a device mapping put there that way would be pinned
 * where the kernel refuses. Read-only checks are not remembered (memory mapped PROT_WRITE only
 * passes a writeable pin and fails a read pin).
 *
 * The spans are a small sorted set under a sequence lock, stamped with the count of changes it
 * was built under: a check reads it without a lock and trusts the answer only when neither the
 * set nor the count changed from before the lookup to after the probe.
 */
#ifndef IOASID_SYS_PINNABLE_H
#define IOASID_SYS_PINNABLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 0 if every page of [address, address+length) could be pinned as the kernel pins it: mapped,
 * ordinary memory (not PROT_NONE, not a device mapping), writeable if asked; the pages are
 * faulted in. Else -EFAULT. */
long ioasid_sys_check_range(uint64_t address, uint64_t length, int writable);

/* Every mmap and mremap of the program is reported from now on (or, with 0, no longer: the
 * spans are forgotten and every check asks the kernel). */
void ioasid_sys_pinnable_watch(int on);

/* The program's mappings are about to change, or just changed: call it both before and after
 * an mmap, munmap or mremap. Async-signal-safe. */
void ioasid_sys_mappings_changing(void);

/* For tests and the benchmark: 1 when [address, address+length) lies inside one remembered
 * span; the populates (system calls) the calling thread made so far; the changes reported so
 * far; and forgetting every span. */
int ioasid_sys_pinnable_remembered(uint64_t address, uint64_t length);
uint64_t ioasid_sys_pinnable_populates(void);
uint64_t ioasid_sys_pinnable_changes(void);
void ioasid_sys_pinnable_forget_all(void);

#ifdef __cplusplus
}
#endif

#endif
