/*
 * The calling thread's identity in one instruction, for per-thread counter stripes on hot
 * paths (the software IOMMU's translation cache). Why this shim exists: Swift has no cheap way to
 * name the current thread; pthread_self() is a call through the PLT, and taking the address of a
 * local turns on the stack protector. The thread pointer (%fs base on x86-64, TPIDR_EL0 on arm64)
 * is distinct for every live thread. Inline, so it costs no call.
 */
#ifndef IOASID_SYS_THREAD_H
#define IOASID_SYS_THREAD_H

#include <stdint.h>

static inline uintptr_t ioasid_sys_thread_pointer(void)
{
	return (uintptr_t)__builtin_thread_pointer();
}

#endif
