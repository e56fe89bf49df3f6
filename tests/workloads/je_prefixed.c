/* A program using a second allocator beside glibc's under je_-prefixed names (as jemalloc built
 * with --with-jemalloc-prefix=je_ exports them): both must be traced, each block once.
 *
 * Ledger comments as in alloc_fns.c. */
#include <stdlib.h>

void *je_malloc(size_t);
void *je_calloc(size_t, size_t);
void *je_realloc(void *, size_t);
void je_free(void *);

static void *volatile keep[4][16];
#define NOINLINE __attribute__((noinline))

NOINLINE void j_prefixed(void) {
    for (int i = 0; i < 6; i++) keep[0][i] = je_malloc(200); /* ledger: site=j_prefixed objects=6 bytes=1200 */
    for (int i = 0; i < 9; i++) je_free(je_malloc(50)); /* ledger: site=j_prefixed objects=0 bytes=0 */
    for (int i = 0; i < 2; i++) keep[1][i] = je_calloc(10, 10); /* ledger: site=j_prefixed objects=2 bytes=200 */
    for (int i = 0; i < 3; i++) keep[2][i] = je_realloc(je_malloc(8), 4000); /* ledger: site=j_prefixed objects=3 bytes=12000 */
}

NOINLINE void j_plain(void) {
    for (int i = 0; i < 5; i++) keep[3][i] = malloc(70); /* ledger: site=j_plain objects=5 bytes=350 */
}

int main(void) {
    j_prefixed();
    j_plain();
    return 0;
}
