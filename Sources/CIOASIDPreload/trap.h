/* What trap.c offers the rest of the preload (not exported from the library). */
#ifndef IOASID_TRAP_H
#define IOASID_TRAP_H

#include <stddef.h>

/* Ends trapping of whatever part of [address, address + length) is trapped, before the caller
 * unmaps it. 0, or -1 with errno (ENOMEM when a region would need splitting and the table is
 * full). Costs one atomic load when no region was ever trapped. */
__attribute__((visibility("hidden"))) int ioasid_trap_forget(void *address, size_t length);

/* Puts the preload's SIGSEGV/SIGBUS handler in front of the program's and lets the engine's safe
 * copies fault (ioasid_sys_uaccess.h). Called once the engine is loaded. 0 or -1. */
__attribute__((visibility("hidden"))) int ioasid_trap_guard_copies(void);

#endif /* IOASID_TRAP_H */
