/* The library preexec.c allocates from, loaded by ld.so after preexec's own exec. */
#include <stdlib.h>

__attribute__((noinline)) void *preexec_keep(int i) {
    return malloc(100 + i); /* ledger: site=preexec_keep objects=8 bytes=828 */
}
