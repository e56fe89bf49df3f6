/* The leak check at a launched command's exit, made where it enters `_exit` with every thread
 * still alive (tests/tests/exit_hold.rs).
 *
 * `exit_hold regs CODE`: a second thread keeps a block only in r12 while it spins in an asm loop
 * (as leak_cases.c's case 14); main drops its only pointer to another block, prints `ready`,
 * and calls exit(CODE). Checked before exit_group, the first is reachable and the second
 * definitely lost.
 *
 * `exit_hold stop CODE`: prints `ready <pid>`, waits (in pause) until it has been stopped and
 * continued (its SIGCONT handler), prints `continued`, then a second thread calls _exit(CODE)
 * while main waits in pthread_join. A user's SIGSTOP stops it as without a tracer.
 *
 * Sizes are multiples of 16, so that no block ends inside the next chunk's header in glibc.
 *
 * Lines go to stderr, formatted on the stack (leakcase.h: stdio would allocate a buffer). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "leakcase.h"

static int ready_pipe[2];
static volatile sig_atomic_t continued;
static int code;

/* The block lives only in r12 of this thread, which spins forever; main learns through a pipe
 * that the pointer is in place. */
static void *spinner(void *unused) {
    (void)unused;
    void *p = malloc(24000); /* frame: held */
    memset(p, 0, 24000);
    HOLD_IN_R12_FOREVER(p, ready_pipe[1]);
}

/* A block whose only pointer is dropped: definitely lost. */
NOINLINE void lose(void) {
    void *volatile p = malloc(22000); /* frame: lost */
    memset(p, 0, 22000);
    p = 0;
}

static void on_cont(int sig) {
    (void)sig;
    continued = 1;
}

static void *exiter(void *unused) {
    (void)unused;
    _exit(code);
}

int main(int argc, char **argv) {
    if (argc < 3) _exit(3);
    code = atoi(argv[2]);
    pthread_t t;
    if (strcmp(argv[1], "regs") == 0) {
        char c;
        if (pipe(ready_pipe)) _exit(3);
        if (pthread_create(&t, 0, spinner, 0)) _exit(3);
        if (read(ready_pipe[0], &c, 1) != 1) _exit(3);
        lose();
        scrub_stack(); /* where lose() left its pointer */
        say("ready %d\n", getpid());
        exit(code);
    }
    if (strcmp(argv[1], "stop") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_cont;
        sigaction(SIGCONT, &sa, 0);
        say("ready %d\n", getpid());
        while (!continued) pause();
        say("continued\n");
        if (pthread_create(&t, 0, exiter, 0)) _exit(3);
        pthread_join(t, 0);
    }
    _exit(3);
}
