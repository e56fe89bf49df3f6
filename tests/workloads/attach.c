/* A process that is already running when the tracer attaches.
 * Before attach it allocates blocks at pre_attach; it then says "ready" on stderr and waits for a
 * line on stdin. After that it frees every pre_attach block (the tracer never saw them allocated:
 * 50 unknown frees), leaks at post_attach, and exits, or with argument "kill" dies of SIGKILL.
 * Ledger comments as in alloc_fns.c, for a trace that starts after "ready". */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PRE 50
#define NOINLINE __attribute__((noinline))
static void *volatile pre[PRE];
static void *volatile post[30];

NOINLINE void pre_attach(void) {
    for (int i = 0; i < PRE; i++) pre[i] = malloc(40); /* ledger: site=pre_attach objects=0 bytes=0 */
}

NOINLINE void post_attach(void) {
    for (int i = 0; i < 30; i++) post[i] = malloc(72); /* ledger: site=post_attach objects=30 bytes=2160 */
}

int main(int argc, char **argv) {
    pre_attach();
    write(2, "ready\n", 6);
    char c;
    while (read(0, &c, 1) == 1 && c != '\n') {}
    for (int i = 0; i < PRE; i++) free(pre[i]);
    post_attach();
    if (argc > 1 && strcmp(argv[1], "kill") == 0) raise(SIGKILL);
    return 0;
}
