/* An allocator call left by longjmp never returns, so the probes' record of it goes stale, and
 * the same frame's later calls enter at the same stack depth, as a tail call would. They must
 * not vanish into it unseen: once the record has taken more calls than any allocator makes
 * inside one call (64), it is known stale, the escaped call and the 64 it took count as lost
 * events (65), and the rest are recorded.
 *
 * The allocator is the program's own, under je_-prefixed names (probed beside glibc's), so
 * that a hook can leave it by longjmp. Ledger comments as in alloc_fns.c. */
#include <setjmp.h>
#include <stddef.h>

static jmp_buf back;
static volatile int escape;
static _Alignas(16) char arena[1 << 16];
static char *next = arena;

__attribute__((noinline)) void *je_malloc(size_t n) {
    if (escape) longjmp(back, 1);
    char *p = next;
    next += (n + 15) & ~(size_t)15;
    return p;
}

void je_free(void *p) { (void)p; }

void *je_calloc(size_t n, size_t s) { return je_malloc(n * s); }

void *je_realloc(void *p, size_t n) {
    (void)p;
    return je_malloc(n);
}

static void *volatile keep[100];

int main(void) {
    escape = 1;
    if (!setjmp(back)) keep[0] = je_malloc(1);
    escape = 0;
    for (int i = 0; i < 100; i++) keep[i] = je_malloc(24); /* ledger: site=main objects=36 bytes=864 */
    return 0;
}
