/* A small target for the leak check's edge cases, driven by lines on stdin (answers on stderr):
 *   alloc  allocates one 4242-byte block, kept in the global g_keep; answers `ok alloc`
 *   drop   clears g_keep (the block is now definitely lost) and scrubs the stack; `ok drop`
 *   tick   answers `tick N`, N the commands taken so far: it still runs
 *   exit   exits with status 0 (as does the end of stdin)
 * It starts by printing `ready <pid>`. Lines are read with read(2) and answers formatted on the
 * stack: no stdio buffer is ever allocated. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "leakcase.h" /* NOINLINE, say, get_line, scrub_stack */

void *volatile g_keep;

NOINLINE void small_alloc(void) {
    void *p = malloc(4242); /* leak: site=small_alloc kind=reachable objects=1 bytes=4242 */
    memset(p, 0, 4242);
    g_keep = p;
}

NOINLINE void small_drop(void) { g_keep = 0; }

int main(void) {
    char cmd[64];
    long taken = 0;
    say("ready %d\n", getpid());
    while (get_line(cmd, sizeof cmd)) {
        taken++;
        if (strcmp(cmd, "alloc") == 0) {
            small_alloc();
            scrub_stack();
            say("ok alloc\n");
        } else if (strcmp(cmd, "drop") == 0) {
            small_drop();
            scrub_stack();
            say("ok drop\n");
        } else if (strcmp(cmd, "tick") == 0) {
            say("tick %ld\n", taken);
        } else if (strcmp(cmd, "exit") == 0) {
            break;
        }
    }
    return 0;
}
