/* The own library's symbols; see include/ioasid_sys_library.h. */
#define _GNU_SOURCE
#include "ioasid_sys_library.h"

#include <dlfcn.h>
#include <stddef.h>

__attribute__((visibility("hidden"))) void *ioasid_sys_own_library_symbol(const char *name) {
    Dl_info self;
    if (name == NULL || dladdr((void *)&ioasid_sys_own_library_symbol, &self) == 0 || self.dli_fname == NULL) return NULL;
    /* Reopen without loading: a handle on the object that is already there. */
    void *handle = dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL) return NULL;
    void *symbol = dlsym(handle, name);
    dlclose(handle); /* drops only the reference RTLD_NOLOAD took */
    /* dlsym on a handle also searches the object's dependencies: keep a definition in this one. */
    Dl_info found;
    if (symbol == NULL || dladdr(symbol, &found) == 0 || found.dli_fbase != self.dli_fbase) return NULL;
    return symbol;
}
