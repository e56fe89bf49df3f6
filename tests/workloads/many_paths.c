/* Many transient call stacks, then a leak. Built with frame pointers (cflags).
 *
 * Phase 1: 2^17 = 131,072 distinct call paths, each allocating a block and freeing it at once.
 * The path of iteration i is 17 calls deep below walk(): at level l it goes through left() or
 * right() as bit l of i says, so every iteration returns through a different sequence of
 * return addresses. Nothing of it stays live.
 * Phase 2: 10 blocks of 777 bytes, leaked through one known path, main -> keep_a -> keep_b ->
 * keep_c, every frame marked. A tracer whose stacks are kept in a table of fixed size (the
 * kernel's stack map, 16,384 entries) has filled it in phase 1 and loses this stack.
 *
 * noipa keeps each function whole and named as written; the volatile store after each call
 * keeps it a call, not a jump. */
#include <stdlib.h>

#define NOINLINE __attribute__((noinline, noipa))
#define LEVELS 17
static void *volatile kept[10];
static volatile int n;

NOINLINE void right(unsigned path, int level);

NOINLINE void transient(void) {
    free(malloc(24)); /* ledger: site=transient objects=0 bytes=0 */
    n++;
}

/* One level of the path: the next one through left() or right(), as bit `level` says. */
NOINLINE void left(unsigned path, int level) {
    if (level == LEVELS)
        transient();
    else if (path >> level & 1)
        right(path, level + 1);
    else
        left(path, level + 1);
    n += 0;
}

NOINLINE void right(unsigned path, int level) {
    if (level == LEVELS)
        transient();
    else if (path >> level & 1)
        right(path, level + 1);
    else
        left(path, level + 1);
    n += 0;
}

NOINLINE void keep_c(int i) {
    kept[i] = malloc(777); /* ledger: site=keep_c objects=10 bytes=7770 */
    n++;
}
NOINLINE void keep_b(int i) {
    keep_c(i); /* frame: keep_b */
    n += 0;
}
NOINLINE void keep_a(int i) {
    keep_b(i); /* frame: keep_a */
    n += 0;
}

int main(void) {
    for (unsigned path = 0; path < 1u << LEVELS; path++) left(path, 0);
    for (int i = 0; i < 10; i++) keep_a(i); /* frame: main */
    return 0;
}
