/* A process that lives a millisecond: it allocates one block in a function of its own and
 * exits at once, before `muppy-trace --all` can read its /proc/PID/maps. Its site must be
 * named all the same (tests/system_wide.rs), from the mappings the kernel sends at its exit.
 *
 * Ledger comments as in alloc_fns.c. */
#include <stdlib.h>

static void *volatile keep;
#define NOINLINE __attribute__((noinline))

NOINLINE void blink_site(void) {
    keep = malloc(48); /* ledger: site=blink_site objects=1 bytes=48 */
}

int main(void) {
    blink_site();
    return 0;
}
