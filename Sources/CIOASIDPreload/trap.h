/* What trap.c offers the rest of the preload (not exported from the library). */
#ifndef IOASID_TRAP_H
#define IOASID_TRAP_H

#include <stddef.h>

/* Ends trapping of whatever part of [address, address + length) is trapped, before the caller
 * unmaps it. 0, or -1 with errno (ENOMEM when a region would need splitting and the table is
 * full). Costs one atomic load when no region was ever trapped. */
__attribute__((visibility("hidden"))) int ioasid_trap_forget(void *address, size_t length);

#endif /* IOASID_TRAP_H */
