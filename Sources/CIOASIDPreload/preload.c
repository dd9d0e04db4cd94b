#include "ioasid_preload.h"
void ioasid_preload_placeholder(void) {}
