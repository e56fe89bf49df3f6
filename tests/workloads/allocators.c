/* The C allocator calls every allocator implements, for tracing one program against glibc,
 * jemalloc, tcmalloc, mimalloc (linked, or LD_PRELOADed) and statically linked: the same
 * ledger must come out whichever allocator serves it.
 *
 * Ledger comments as in alloc_fns.c. */
#define _GNU_SOURCE
#include <stdlib.h>

static void *volatile keep[8][16];
#define NOINLINE __attribute__((noinline))

NOINLINE void a_malloc(void) {
    for (int i = 0; i < 10; i++) keep[0][i] = malloc(100); /* ledger: site=a_malloc objects=10 bytes=1000 */
    for (int i = 0; i < 20; i++) free(malloc(32)); /* ledger: site=a_malloc objects=0 bytes=0 */
}

NOINLINE void a_calloc(void) {
    for (int i = 0; i < 7; i++) keep[1][i] = calloc(3, 40); /* ledger: site=a_calloc objects=7 bytes=840 */
}

NOINLINE void *a_src(size_t n) {
    return malloc(n); /* ledger: site=a_src objects=0 bytes=0 */
}

NOINLINE void a_realloc(void) {
    for (int i = 0; i < 4; i++) keep[2][i] = realloc(a_src(16), 200000); /* ledger: site=a_realloc objects=4 bytes=800000 */
    for (int i = 0; i < 3; i++) keep[3][i] = realloc(a_src(1000), 500); /* ledger: site=a_realloc objects=3 bytes=1500 */
    for (int i = 0; i < 6; i++) keep[4][i] = realloc(NULL, 300); /* ledger: site=a_realloc objects=6 bytes=1800 */
}

NOINLINE void a_aligned(void) {
    for (int i = 0; i < 5; i++) posix_memalign((void **)&keep[5][i], 64, 256); /* ledger: site=a_aligned objects=5 bytes=1280 */
    for (int i = 0; i < 2; i++) keep[6][i] = aligned_alloc(4096, 8192); /* ledger: site=a_aligned objects=2 bytes=16384 */
}

int main(void) {
    a_malloc();
    a_calloc();
    a_realloc();
    a_aligned();
    return 0;
}
