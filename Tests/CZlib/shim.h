/* zlib for the tests that read back a browser's PNG screenshot (the report's render check). */
#include <zlib.h>
