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
 * Lines go to stderr, formatted on the stack (stdio would allocate a buffer). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static int ready_pipe[2];
static const char one = 1;
static volatile sig_atomic_t continued;
static int code;

static void say(const char *fmt, ...) {
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (write(2, line, (size_t)n) != n) _exit(3);
}

/* The block lives only in r12 of this thread, which spins forever. Every other general
 * register and 8 KiB below the stack pointer (malloc's and memset's frames) are zeroed first;
 * the asm then tells main through a pipe that the pointer is in place. */
static void *spinner(void *unused) {
    (void)unused;
    void *p = malloc(24000); /* frame: held */
    memset(p, 0, 24000);
    __asm__ volatile(
        "mov %%rax, %%r12\n\t"
        "mov %%rbx, %%r13\n\t"
        "mov %%rsi, %%r14\n\t"
        "xor %%eax, %%eax\n\t"
        "xor %%ebx, %%ebx\n\t"
        "xor %%ecx, %%ecx\n\t"
        "xor %%edx, %%edx\n\t"
        "xor %%esi, %%esi\n\t"
        "xor %%edi, %%edi\n\t"
        "xor %%r8d, %%r8d\n\t"
        "xor %%r9d, %%r9d\n\t"
        "xor %%r10d, %%r10d\n\t"
        "xor %%r11d, %%r11d\n\t"
        "xor %%r15d, %%r15d\n\t"
        "sub $8192, %%rsp\n\t"
        "mov %%rsp, %%rdi\n\t"
        "mov $1024, %%ecx\n\t"
        "rep stosq\n\t"
        "add $8192, %%rsp\n\t"
        /* write(ready_pipe[1], &one, 1) */
        "mov $1, %%eax\n\t"
        "mov %%r13, %%rdi\n\t"
        "mov %%r14, %%rsi\n\t"
        "mov $1, %%edx\n\t"
        "syscall\n\t"
        "xor %%eax, %%eax\n\t"
        "xor %%ecx, %%ecx\n\t"
        "xor %%edx, %%edx\n\t"
        "xor %%esi, %%esi\n\t"
        "xor %%edi, %%edi\n\t"
        "xor %%r11d, %%r11d\n\t"
        "xor %%r13d, %%r13d\n\t"
        "xor %%r14d, %%r14d\n\t"
        "1: pause\n\t"
        "jmp 1b\n\t"
        :
        : "a"(p), "b"((long)ready_pipe[1]), "S"(&one)
        : "rcx", "rdx", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "memory",
          "cc");
    __builtin_unreachable();
}

/* A block whose only pointer is dropped: definitely lost. */
NOINLINE void lose(void) {
    void *volatile p = malloc(22000); /* frame: lost */
    memset(p, 0, 22000);
    p = 0;
}

/* Zeroes the stack below main's frame, where lose() left its pointer. */
NOINLINE void scrub(void) {
    volatile char buf[16384];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = 0;
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
        scrub();
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
