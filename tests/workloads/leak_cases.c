/* Every kind of block Valgrind memcheck's leak check tells apart (its memcheck/tests/leak-cases.c
 * cases 1-10), and the roots an external check must find: a second thread's stack, a __thread
 * variable, a register of a running thread, a dlopen'd library's data, an anonymous mapping and
 * heap memory allocated before tracing; plus a pointer left only in a freed block and a lost
 * 1000-node list. tests/tests/leaks.rs runs it under Valgrind (the oracle) and under
 * `muppy-trace leaks`, and compares.
 *
 * Protocol (lines on stderr, so that stdout stays muppy-trace's in launch mode):
 *   - allocates the pre-attach table T, prints `ready <pid>`;
 *   - waits for SIGUSR1 (blocked in every thread, taken with sigwait: never lost);
 *   - builds every case, scrubs 16 KiB of stack, prints
 *     `built case11_tid=N case14_tid=N case1=0xADDR g_case1=0xADDR`;
 *   - idles forever: main blocked in pause(), thread 11 blocked in read(), the spinner spinning.
 * With argument `exit` it does not wait for SIGUSR1 and exits (status 0) after `built`.
 *
 * Block sizes encode the case: k*1000 bytes, +1 for the second block of a case. Each block has
 * its own call site, malloc called right at that line, and is zeroed (Valgrind ignores
 * uninitialised words; a native check reads the real bytes). Comments
 * `leak: site=FUNCTION kind=KIND objects=N bytes=B [indirect=I] [before]` give what that line's
 * call must end as: `before` marks a block allocated before the SIGUSR1 (an attached tracer
 * never sees it), `indirect` the bytes a definitely lost block's clique holds besides itself.
 * Blocks are built in noinline functions and the stack is scrubbed after, so that no stale local
 * keeps a lost block reachable; gcc keeps every malloc (-fno-builtin, and ESCAPE). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "leakcase.h" /* NOINLINE, ESCAPE, CLEAR_SCRATCH, say, scrub_stack, HOLD_IN_R12_FOREVER */

/* The roots, by the names `refs` must print. */
void *volatile g_case1;
void *volatile g_case2;
void *volatile g_case5;
void *volatile g_case6;
void *volatile g_case7;
void *volatile g_case8;
volatile uintptr_t g_case13;
void **volatile g_case16_page;
void **volatile g_table; /* T: allocated before the attach */
static __thread void *volatile tls_case12;

volatile int g_case11_tid, g_case14_tid;
static int pipe11[2], block11[2], pipe14[2];

NOINLINE void pre_attach(void) {
    void **t = malloc(800); /* leak: site=pre_attach kind=reachable objects=1 bytes=800 before */
    memset(t, 0, 800);
    g_table = t;
}

/* 1: global -> A: still reachable. */
NOINLINE void case1(void) {
    void *a = malloc(1000); /* leak: site=case1 kind=reachable objects=1 bytes=1000 */
    memset(a, 0, 1000);
    g_case1 = a;
}

/* 2: global -> A -> B: both reachable. */
NOINLINE void case2(void) {
    void **a = malloc(2000); /* leak: site=case2 kind=reachable objects=1 bytes=2000 */
    memset(a, 0, 2000);
    void *b = malloc(2001); /* leak: site=case2 kind=reachable objects=1 bytes=2001 */
    memset(b, 0, 2001);
    a[0] = b;
    g_case2 = a;
}

/* 3: no pointer at all: definitely lost. */
NOINLINE void case3(void) {
    void *a = malloc(3000); /* leak: site=case3 kind=definitely_lost objects=1 bytes=3000 */
    memset(a, 0, 3000);
    ESCAPE(a);
}

/* 4: lost A -> B: A definitely, B indirectly lost. */
NOINLINE void case4(void) {
    void **a = malloc(4000); /* leak: site=case4 kind=definitely_lost objects=1 bytes=4000 indirect=4001 */
    memset(a, 0, 4000);
    void *b = malloc(4001); /* leak: site=case4 kind=indirectly_lost objects=1 bytes=4001 */
    memset(b, 0, 4001);
    a[0] = b;
    ESCAPE(a);
}

/* 5: global -> A+8 (interior): possibly lost. */
NOINLINE void case5(void) {
    char *a = malloc(5000); /* leak: site=case5 kind=possibly_lost objects=1 bytes=5000 */
    memset(a, 0, 5000);
    g_case5 = a + 8;
}

/* 6: global -> A -> B+8: A reachable, B possibly lost. */
NOINLINE void case6(void) {
    void **a = malloc(6000); /* leak: site=case6 kind=reachable objects=1 bytes=6000 */
    memset(a, 0, 6000);
    char *b = malloc(6001); /* leak: site=case6 kind=possibly_lost objects=1 bytes=6001 */
    memset(b, 0, 6001);
    a[0] = b + 8;
    g_case6 = a;
}

/* 7: global -> A+8, A -> B: both possibly lost. */
NOINLINE void case7(void) {
    void **a = malloc(7000); /* leak: site=case7 kind=possibly_lost objects=1 bytes=7000 */
    memset(a, 0, 7000);
    void *b = malloc(7001); /* leak: site=case7 kind=possibly_lost objects=1 bytes=7001 */
    memset(b, 0, 7001);
    a[0] = b;
    g_case7 = (char *)a + 8;
}

/* 8: global -> A+8, A -> B+8: both possibly lost. */
NOINLINE void case8(void) {
    void **a = malloc(8000); /* leak: site=case8 kind=possibly_lost objects=1 bytes=8000 */
    memset(a, 0, 8000);
    char *b = malloc(8001); /* leak: site=case8 kind=possibly_lost objects=1 bytes=8001 */
    memset(b, 0, 8001);
    a[0] = b + 8;
    g_case8 = (char *)a + 8;
}

/* 9: lost A -> B+8: A definitely, B indirectly lost. */
NOINLINE void case9(void) {
    void **a = malloc(9000); /* leak: site=case9 kind=definitely_lost objects=1 bytes=9000 indirect=9001 */
    memset(a, 0, 9000);
    char *b = malloc(9001); /* leak: site=case9 kind=indirectly_lost objects=1 bytes=9001 */
    memset(b, 0, 9001);
    a[0] = b + 8;
    ESCAPE(a);
}

/* 10: A <-> B, nothing else: the clique's leader (the lower address, A, allocated first from the
 * top of the heap) definitely lost, the other indirectly. */
NOINLINE void case10(void) {
    void **a = malloc(10000); /* leak: site=case10 kind=definitely_lost objects=1 bytes=10000 indirect=10001 */
    memset(a, 0, 10000);
    void **b = malloc(10001); /* leak: site=case10 kind=indirectly_lost objects=1 bytes=10001 */
    memset(b, 0, 10001);
    a[0] = b;
    b[0] = a;
    ESCAPE(a);
}

/* 11: only in a local of a second thread, which stays blocked in read(): reachable. */
static void *case11_thread(void *unused) {
    (void)unused;
    g_case11_tid = (int)syscall(SYS_gettid);
    void *volatile held = malloc(11000); /* leak: site=case11_thread kind=reachable objects=1 bytes=11000 */
    memset(held, 0, 11000);
    char c = 1;
    if (write(pipe11[1], &c, 1) != 1) _exit(3);
    for (;;) {
        CLEAR_SCRATCH();
        if (read(block11[0], &c, 1) <= 0) pause(); /* never written: blocks here */
    }
    return held;
}

NOINLINE void case11(void) {
    pthread_t t;
    char c;
    if (pipe(pipe11) || pipe(block11)) _exit(3);
    if (pthread_create(&t, 0, case11_thread, 0)) _exit(3);
    if (read(pipe11[0], &c, 1) != 1) _exit(3);
}

/* 12: only in a __thread variable of the main thread: reachable. */
NOINLINE void case12(void) {
    void *a = malloc(12000); /* leak: site=case12 kind=reachable objects=1 bytes=12000 */
    memset(a, 0, 12000);
    tls_case12 = a;
}

/* 13: only stored XOR-ed, which points at nothing: definitely lost. */
NOINLINE void case13(void) {
    void *a = malloc(13000); /* leak: site=case13 kind=definitely_lost objects=1 bytes=13000 */
    memset(a, 0, 13000);
    g_case13 = (uintptr_t)a ^ 0x5a5a5a5a5a5a5a5aULL;
}

/* 14: only in r12 of a thread spinning forever in an asm loop: reachable. The loop first zeroes
 * every other general register and 8 KiB of stack, then tells main through a pipe that the
 * pointer is in place (leakcase.h). */
static void *case14_thread(void *unused) {
    (void)unused;
    g_case14_tid = (int)syscall(SYS_gettid);
    void *p = malloc(14000); /* leak: site=case14_thread kind=reachable objects=1 bytes=14000 */
    memset(p, 0, 14000);
    HOLD_IN_R12_FOREVER(p, pipe14[1]);
}

NOINLINE void case14(void) {
    pthread_t t;
    char c;
    if (pipe(pipe14)) _exit(3);
    if (pthread_create(&t, 0, case14_thread, 0)) _exit(3);
    if (read(pipe14[0], &c, 1) != 1) _exit(3);
}

/* 15: only in a global of a library loaded with dlopen (lib/leak_plugin.c): reachable. */
NOINLINE void case15(void) {
    void *lib = dlopen(PLUGIN, RTLD_NOW);
    if (!lib) {
        say("dlopen: %s\n", dlerror());
        _exit(3);
    }
    void (*set)(void *) = (void (*)(void *))dlsym(lib, "leak_plugin_set");
    if (!set) _exit(3);
    void *a = malloc(15000); /* leak: site=case15 kind=reachable objects=1 bytes=15000 */
    memset(a, 0, 15000);
    set(a);
}

/* 16: only in an anonymous mmap'd page: reachable. */
NOINLINE void case16(void) {
    void **page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) _exit(3);
    void *a = malloc(16000); /* leak: site=case16 kind=reachable objects=1 bytes=16000 */
    memset(a, 0, 16000);
    page[5] = a;
    g_case16_page = page;
}

/* 17: only in table T, a block allocated before the attach that a global keeps: reachable. */
NOINLINE void case17(void) {
    void *a = malloc(17000); /* leak: site=case17 kind=reachable objects=1 bytes=17000 */
    memset(a, 0, 17000);
    g_table[7] = a;
}

/* The lost list: 1000 nodes, head dropped: the head definitely lost, 999 nodes indirectly. */
struct node {
    struct node *next;
    char pad[40];
};

NOINLINE void lost_list(void) {
    struct node *head = malloc(sizeof *head); /* leak: site=lost_list kind=definitely_lost objects=1 bytes=48 indirect=47952 */
    memset(head, 0, sizeof *head);
    struct node *tail = head;
    for (int i = 0; i < 999; i++) {
        struct node *n = malloc(sizeof *n); /* leak: site=lost_list kind=indirectly_lost objects=999 bytes=47952 */
        memset(n, 0, sizeof *n);
        tail->next = n;
        tail = n;
    }
    ESCAPE(head);
}

/* 18: only in block F (at offset 80, past what the allocator writes into a free chunk), and F
 * is freed: definitely lost. Built last, so that no later allocation reuses F. */
NOINLINE void case18(void) {
    void **f = malloc(256); /* leak: site=case18 kind=freed objects=0 bytes=0 */
    memset(f, 0, 256);
    void *a = malloc(18000); /* leak: site=case18 kind=definitely_lost objects=1 bytes=18000 */
    memset(a, 0, 18000);
    f[10] = a;
    free(f);
}

NOINLINE void build_cases(void) {
    case1();
    case2();
    case3();
    case4();
    case5();
    case6();
    case7();
    case8();
    case9();
    case10();
    case11();
    case12();
    case13();
    case14();
    case15();
    case16();
    case17();
    lost_list();
    case18();
}

int main(int argc, char **argv) {
    int exit_after = argc > 1 && strcmp(argv[1], "exit") == 0;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    /* Blocked before any thread starts, so every thread inherits it. */
    pthread_sigmask(SIG_BLOCK, &usr1, 0);
    pre_attach();
    say("ready %d\n", getpid());
    if (!exit_after) {
        int sig = 0;
        while (sig != SIGUSR1)
            if (sigwait(&usr1, &sig)) _exit(3);
    }
    build_cases();
    scrub_stack(); /* where the cases' frames held their pointers */
    say("built case11_tid=%d case14_tid=%d case1=%#lx g_case1=%#lx\n", g_case11_tid, g_case14_tid,
        (unsigned long)g_case1, (unsigned long)&g_case1);
    if (exit_after) exit(0);
    for (;;) pause();
}
