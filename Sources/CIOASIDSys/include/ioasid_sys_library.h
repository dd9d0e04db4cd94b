/*
 * CIOASIDSys: a symbol of the shared library this code is linked into (the engine's own
 * library), for entry points that code built into that library may define. Unlike the rest of
 * CIOASIDSys this calls the dynamic loader (which takes its lock); it is called once, at start.
 */
#ifndef IOASID_SYS_LIBRARY_H
#define IOASID_SYS_LIBRARY_H

#ifdef __cplusplus
extern "C" {
#endif

/* The address of `name` if the shared object that contains this function defines it (not a
 * library it depends on, not the program), else NULL. */
/* Hidden: every library that links CIOASIDSys keeps its own copy, so that "own library" is the
 * caller's (the preload links CIOASIDSys too, and exported copies would bind to the preload's). */
__attribute__((visibility("hidden"))) void *ioasid_sys_own_library_symbol(const char *name);

#ifdef __cplusplus
}
#endif

#endif
