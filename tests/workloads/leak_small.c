/* A small target for the leak check's edge cases, driven by lines on stdin (answers on stderr):
 *   alloc  allocates one 4242-byte block, kept in the global g_keep; answers `ok alloc`
 *   drop   clears g_keep (the block is now definitely lost) and scrubs the stack; `ok drop`
 *   tick   answers `tick N`, N the commands taken so far: it still runs
 *   exit   exits with status 0 (as does the end of stdin)
 * It starts by printing `ready <pid>`. Lines are read with read(2) and answers formatted on the
 * stack: no stdio buffer is ever allocated. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile g_keep;

static void say(const char *fmt, ...) {
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (write(2, line, (size_t)n) != n) _exit(3);
}

NOINLINE void small_alloc(void) {
    void *p = malloc(4242); /* leak: site=small_alloc kind=reachable objects=1 bytes=4242 */
    memset(p, 0, 4242);
    g_keep = p;
}

NOINLINE void small_drop(void) { g_keep = 0; }

/* Zeroes the stack below the caller and the scratch registers: no stale copy of a pointer. */
NOINLINE void scrub(void) {
    volatile char buf[8192];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = 0;
    __asm__ volatile("xor %%eax, %%eax\n\txor %%ecx, %%ecx\n\txor %%edx, %%edx\n\t"
                     "xor %%esi, %%esi\n\txor %%edi, %%edi\n\txor %%r8d, %%r8d\n\t"
                     "xor %%r9d, %%r9d\n\txor %%r10d, %%r10d\n\txor %%r11d, %%r11d"
                     ::: "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory");
}

/* One line of stdin, without its newline; 0 at the end of input. */
static int get_line(char *buf, size_t cap) {
    size_t n = 0;
    char c;
    for (;;) {
        ssize_t r = read(0, &c, 1);
        if (r <= 0) return n > 0;
        if (c == '\n') break;
        if (n + 1 < cap) buf[n++] = c;
    }
    buf[n] = 0;
    return 1;
}

int main(void) {
    char cmd[64];
    long taken = 0;
    say("ready %d\n", getpid());
    while (get_line(cmd, sizeof cmd)) {
        taken++;
        if (strcmp(cmd, "alloc") == 0) {
            small_alloc();
            scrub();
            say("ok alloc\n");
        } else if (strcmp(cmd, "drop") == 0) {
            small_drop();
            scrub();
            say("ok drop\n");
        } else if (strcmp(cmd, "tick") == 0) {
            say("tick %ld\n", taken);
        } else if (strcmp(cmd, "exit") == 0) {
            break;
        }
    }
    return 0;
}
