/* fork and exec: the parent keeps blocks, one child keeps its own and frees one block it
 * inherited, another child execs the program in argv[1] (another allocator, for the tests).
 * Each process must get its own table with its own ledger.
 *
 * Ledger comments as in alloc_fns.c; `proc=` says whose table the blocks are in. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile keep[4][16];
#define NOINLINE __attribute__((noinline))

NOINLINE void f_parent(void) {
    for (int i = 0; i < 8; i++) keep[0][i] = malloc(100); /* ledger: site=f_parent objects=8 bytes=800 proc=parent */
}

NOINLINE void f_child(void) {
    for (int i = 0; i < 3; i++) keep[1][i] = malloc(4000); /* ledger: site=f_child objects=3 bytes=12000 proc=child */
    for (int i = 0; i < 5; i++) free(malloc(10)); /* ledger: site=f_child objects=0 bytes=0 proc=child */
    free(keep[0][0]); /* a block from before the fork: unknown to the child's table */
}

int main(int argc, char **argv) {
    f_parent();
    pid_t a = fork();
    if (a == 0) {
        f_child();
        _exit(0);
    }
    waitpid(a, 0, 0);
    pid_t b = fork();
    if (b == 0) {
        execv(argv[1], argv + 1);
        _exit(127);
    }
    waitpid(b, 0, 0);
    return 0;
}
