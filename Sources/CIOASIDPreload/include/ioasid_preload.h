/*
 * libioasid-preload.so — the LD_PRELOAD interposer in front of the ioasid engine.
 *
 * The interposer replaces the libc entry points a program uses on /dev/iommu (open and its
 * fortified variants, ioctl, read, write, close, dup/dup2/dup3, fcntl F_DUPFD*, mmap,
 * close_range, closefrom). Every other file descriptor goes straight to the real libc function
 * after one table lookup. See docs/architecture.md, "Preload contract".
 *
 * This header declares the one function the preload exports for the engine.
 */
#ifndef IOASID_PRELOAD_H
#define IOASID_PRELOAD_H

#ifdef __cplusplus
extern "C" {
#endif

/* Marks `fd` as the engine's own (owned != 0) or as foreign (owned == 0). Calls on an owned fd
 * are routed to the engine. The engine calls it for every fd it creates (through
 * dlsym(RTLD_DEFAULT, "ioasid_preload_claim")), before handing the fd to the program.
 * Thread-safe and async-signal-safe. */
void ioasid_preload_claim(int fd, int owned);

#ifdef __cplusplus
}
#endif

#endif /* IOASID_PRELOAD_H */
