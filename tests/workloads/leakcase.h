/* What the leak check's workloads share (leak_cases.c, leak_small.c, leak_threads.c,
 * exit_hold.c): lines on stderr formatted on the stack and lines of stdin read with read(2), so
 * that no stdio buffer is ever allocated, and the ways they leave no stale copy of a pointer
 * behind for a native check to find (a scrubbed stack and scratch registers, a thread that keeps
 * a block in r12 alone).
 *
 * tests/build.rs compiles only the .c and .cc files of this folder; it reruns when anything in
 * the folder changes, this header included. The functions are static: one copy per program. */
#ifndef LEAKCASE_H
#define LEAKCASE_H

#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define UNUSED __attribute__((unused))

/* The compiler must believe p is used (a malloc whose result is unused may be deleted). */
#define ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")

/* Zeroes the scratch registers, which calls leave stale pointers in. */
#define CLEAR_SCRATCH()                                                                           \
    __asm__ volatile("xor %%eax, %%eax\n\txor %%ecx, %%ecx\n\txor %%edx, %%edx\n\t"                 \
                     "xor %%esi, %%esi\n\txor %%edi, %%edi\n\txor %%r8d, %%r8d\n\t"                 \
                     "xor %%r9d, %%r9d\n\txor %%r10d, %%r10d\n\txor %%r11d, %%r11d" ::                \
                         : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory")

/* One line on stderr, formatted on the stack (stdio would allocate a buffer). */
static UNUSED void say(const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (write(2, line, (size_t)n) != n) _exit(3);
}

/* One line of stdin, without its newline; 0 at the end of input. */
static UNUSED int get_line(char *buf, size_t cap) {
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

/* Zeroes 16 KiB of stack below the caller's frame, where the frames of the functions it called
 * held their pointers, and the scratch registers. */
static NOINLINE UNUSED void scrub_stack(void) {
    volatile char buf[16384];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = 0;
    CLEAR_SCRATCH();
}

static const char leakcase_one UNUSED = 1;

/* Ends the calling thread's own work with block P held in its r12 alone, and spins there
 * forever: zeroes every other general register and 8 KiB below the stack pointer (where malloc
 * and memset left their frames), then writes one byte to FD, from the asm, to tell that the
 * pointer is in place. A macro, not a function: a call would save the callee-saved registers,
 * the pointer among them, on the stack. */
#define HOLD_IN_R12_FOREVER(p, fd)                                                                \
    do {                                                                                          \
        __asm__ volatile(                                                                         \
            "mov %%rax, %%r12\n\t"                                                                \
            "mov %%rbx, %%r13\n\t"                                                                \
            "mov %%rsi, %%r14\n\t"                                                                \
            "xor %%eax, %%eax\n\t"                                                                \
            "xor %%ebx, %%ebx\n\t"                                                                \
            "xor %%ecx, %%ecx\n\t"                                                                \
            "xor %%edx, %%edx\n\t"                                                                \
            "xor %%esi, %%esi\n\t"                                                                \
            "xor %%edi, %%edi\n\t"                                                                \
            "xor %%r8d, %%r8d\n\t"                                                                \
            "xor %%r9d, %%r9d\n\t"                                                                \
            "xor %%r10d, %%r10d\n\t"                                                              \
            "xor %%r11d, %%r11d\n\t"                                                              \
            "xor %%r15d, %%r15d\n\t"                                                              \
            /* the stack pointer moves down first: Valgrind flags writes below it */              \
            "sub $8192, %%rsp\n\t"                                                                \
            "mov %%rsp, %%rdi\n\t"                                                                \
            "mov $1024, %%ecx\n\t"                                                                \
            "rep stosq\n\t"                                                                       \
            "add $8192, %%rsp\n\t"                                                                \
            /* write(fd, &leakcase_one, 1) */                                                     \
            "mov $1, %%eax\n\t"                                                                   \
            "mov %%r13, %%rdi\n\t"                                                                \
            "mov %%r14, %%rsi\n\t"                                                                \
            "mov $1, %%edx\n\t"                                                                   \
            "syscall\n\t"                                                                         \
            "xor %%eax, %%eax\n\t"                                                                \
            "xor %%ecx, %%ecx\n\t"                                                                \
            "xor %%edx, %%edx\n\t"                                                                \
            "xor %%esi, %%esi\n\t"                                                                \
            "xor %%edi, %%edi\n\t"                                                                \
            "xor %%r11d, %%r11d\n\t"                                                              \
            "xor %%r13d, %%r13d\n\t"                                                              \
            "xor %%r14d, %%r14d\n\t"                                                              \
            "1: pause\n\t"                                                                        \
            "jmp 1b\n\t"                                                                          \
            :                                                                                     \
            : "a"(p), "b"((long)(fd)), "S"(&leakcase_one)                                         \
            : "rcx", "rdx", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",         \
              "memory", "cc");                                                                    \
        __builtin_unreachable();                                                                  \
    } while (0)

#endif
