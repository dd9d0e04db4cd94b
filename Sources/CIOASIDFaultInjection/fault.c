/* The thread-local word of include/ioasid_fault.h (zero on every new thread: nothing armed). */
#include "ioasid_fault.h"

_Thread_local uint64_t ioasid_fault_thread_word;
