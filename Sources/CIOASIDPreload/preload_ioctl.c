/*
 * The exported ioctl, with a fixed prototype: `int ioctl(int, unsigned long, void *)`.
 *
 * Programs call ioctl as a variadic function. On x86-64 and AArch64 Linux the first variadic
 * argument travels in the register a fixed third parameter would use (x86-64's %al, the count of
 * vector registers a variadic call sets, is only read by a variadic callee), so a wrapper defined
 * with a fixed third parameter receives the same pointer without va_start saving every argument
 * register, and forwards it to libc's ioctl (which on glibc reads the third argument register as
 * well) through a fixed-prototype pointer: a tail call. This translation unit does not include
 * <sys/ioctl.h>, whose variadic declaration the definition would contradict.
 *
 * The fast path is the whole cost a program that never opens /dev/iommu pays: one byte load
 * (is the number ours?), one compare (KVM's VFIO attribute request), one load (is the engine
 * loaded?), the jump to libc. Everything else goes to preload.c's ioasid_preload_ioctl.
 */
#include "preload_internal.h"

#if IOASID_FIXED_IOCTL_WRAPPER

#define IOASID_EXPORT __attribute__((visibility("default")))

typedef int (*fixed_ioctl_fn)(int, unsigned long, void *);

IOASID_EXPORT int ioctl(int fd, unsigned long request, void *argument) {
    if (likely(!ioasid_owned(fd)) && likely(request != IOASID_KVM_SET_DEVICE_ATTR) &&
        likely(atomic_load_explicit(&ioasid_engine_state, memory_order_relaxed) != IOASID_ENGINE_READY)) {
        fixed_ioctl_fn real = (fixed_ioctl_fn)atomic_load_explicit(&ioasid_real_ioctl, memory_order_relaxed);
        if (likely(real != NULL)) return real(fd, request, argument);
    }
    return ioasid_preload_ioctl(fd, request, argument);
}

#endif
