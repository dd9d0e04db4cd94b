/*
 * libioasid-preload.so — the LD_PRELOAD interposer in front of the ioasid engine.
 *
 * The interposer replaces the libc entry points a program uses on /dev/iommu (open and its
 * fortified variants, ioctl, read, write, close, dup/dup2/dup3, fcntl F_DUPFD*, mmap,
 * close_range, closefrom). Every other file descriptor goes straight to the real libc function
 * after one table lookup. See docs/architecture.md, "Preload contract".
 *
 * This header declares what the preload exports for the engine: fd ownership and trapped MMIO.
 */
#ifndef IOASID_PRELOAD_H
#define IOASID_PRELOAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks `fd` as the engine's own (owned != 0) or as foreign (owned == 0). Calls on an owned fd
 * are routed to the engine. The engine calls it for every fd it creates (through
 * dlsym(RTLD_DEFAULT, "ioasid_preload_claim")), before handing the fd to the program.
 * Thread-safe and async-signal-safe. */
void ioasid_preload_claim(int fd, int owned);

/* ---- Trapped MMIO (trap.c): plain loads and stores to a BAR reach a device model ---------- */

/* Called for one access to a trapped region: `offset` from the region's start, `size` bytes
 * (1, 2, 4, 8; 16, 32 or 64 for a whole SSE/VEX/EVEX vector move; 64 for MOVDIR64B; a masked
 * EVEX move and MOVS/STOS give accesses of 8 bytes at most), `data` little-endian. For a load
 * (is_write == 0) the handler fills `data`; for a store it reads it. Returns 0, or -1 for a bus
 * error: the program then gets SIGBUS (si_code BUS_ADRERR, si_addr the access), as on a real
 * machine. Runs inside a signal handler with every signal blocked, on the faulting thread: it
 * must not allocate, must not map or unmap trapped regions (EDEADLK), and must not touch a
 * trapped region. */
typedef int (*ioasid_mmio_handler)(void *context, uint64_t offset, unsigned size, int is_write, void *data);

/* Reserves `length` bytes (a page multiple) with no access, at `hint` if that range is free
 * (page-aligned; NULL for anywhere). Every load or store the program makes there traps, is
 * decoded and becomes a call of handler(context, ...), in program order; the instruction then
 * completes with the handler's data. The first call installs the preload's SIGSEGV, SIGBUS and
 * SIGILL handler in front of the program's (docs/architecture.md, "Trapped MMIO"). Returns the
 * address, or MAP_FAILED with errno set (EINVAL, ENOMEM when 256 regions are trapped,
 * EDEADLK from a handler, or mmap's errno). */
void *ioasid_trap_map(size_t length, void *hint, ioasid_mmio_handler handler, void *context);

/* Ends trapping of a region or of part of one (page-aligned `address`) and unmaps that range;
 * munmap() of a trapped range does the same. When it returns, no handler call for the range is
 * running or will start. 0, or -1 with errno (EINVAL; ENOMEM when splitting a region finds the
 * table full; EDEADLK from a handler). */
int ioasid_trap_unmap(void *address, size_t length);

#ifdef __cplusplus
}
#endif

#endif /* IOASID_PRELOAD_H */
