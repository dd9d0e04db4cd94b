#include "ioasid_sys.h"
