/* One site per allocator entry point, with the semantics muppy must get exactly right.
 *
 * The ledger is in this file: every line that allocates carries a comment
 *   ledger: site=FUNCTION objects=N bytes=B
 * giving what must be live at that line's site when the program exits (objects=0: no row).
 * The test reads these comments, so the code and its ledger cannot drift apart.
 * Only write(2) is used for output: stdio would allocate buffers of its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Walloc-size-larger-than="
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define KEEP_MAX 64
static void *volatile keep[16][KEEP_MAX];
#define NOINLINE __attribute__((noinline))

NOINLINE void site_malloc(void) {
    for (int i = 0; i < 10; i++) keep[0][i] = malloc(100); /* ledger: site=site_malloc objects=10 bytes=1000 */
    for (int i = 0; i < 5; i++) free(malloc(100)); /* ledger: site=site_malloc objects=0 bytes=0 */
}

NOINLINE void site_calloc(void) {
    for (int i = 0; i < 7; i++) keep[1][i] = calloc(3, 40); /* ledger: site=site_calloc objects=7 bytes=840 */
    keep[1][7] = calloc(SIZE_MAX / 2, 4); /* overflow: fails */
}

NOINLINE void *site_realloc_src(size_t n) {
    return malloc(n); /* ledger: site=site_realloc_src objects=0 bytes=0 */
}

NOINLINE void site_realloc_move(void) {
    /* 200000 bytes is above the mmap threshold: the block must move. */
    for (int i = 0; i < 4; i++) keep[2][i] = realloc(site_realloc_src(16), 200000); /* ledger: site=site_realloc_move objects=4 bytes=800000 */
}

NOINLINE void site_realloc_shrink(void) {
    for (int i = 0; i < 3; i++) keep[3][i] = realloc(site_realloc_src(1000), 500); /* ledger: site=site_realloc_shrink objects=3 bytes=1500 */
}

NOINLINE void site_realloc_null(void) {
    /* realloc(NULL, n) is malloc, and glibc's realloc reaches malloc inside: must count once. */
    for (int i = 0; i < 6; i++) keep[4][i] = realloc(NULL, 300); /* ledger: site=site_realloc_null objects=6 bytes=1800 */
}

NOINLINE void site_realloc_zero(void) {
    /* realloc(p, 0) frees p (glibc reaches free inside): nothing stays. */
    for (int i = 0; i < 5; i++) keep[5][i] = realloc(site_realloc_src(64), 0); /* ledger: site=site_realloc_zero objects=0 bytes=0 */
}

NOINLINE void *site_realloc_keep_src(void) {
    return malloc(48); /* ledger: site=site_realloc_keep_src objects=8 bytes=384 */
}

NOINLINE void site_realloc_fail(void) {
    /* A failed realloc leaves the old block where it was. */
    for (int i = 0; i < 8; i++) {
        void *p = site_realloc_keep_src();
        void *q = realloc(p, SIZE_MAX - 4096); /* ledger: site=site_realloc_fail objects=0 bytes=0 */
        keep[6][i] = q ? q : p;
    }
}

NOINLINE void site_reallocarray(void) {
    for (int i = 0; i < 3; i++) keep[7][i] = reallocarray(NULL, 5, 20); /* ledger: site=site_reallocarray objects=3 bytes=300 */
    for (int i = 0; i < 2; i++) keep[7][8 + i] = reallocarray(site_realloc_src(8), 10, 30); /* ledger: site=site_reallocarray objects=2 bytes=600 */
    keep[7][20] = reallocarray(NULL, SIZE_MAX / 2, 4); /* overflow: fails */
}

NOINLINE void site_posix_memalign(void) {
    for (int i = 0; i < 5; i++) {
        void *p = 0;
        if (posix_memalign(&p, 64, 256) == 0) keep[8][i] = p; /* ledger: site=site_posix_memalign objects=5 bytes=1280 */
    }
    void *bad = 0;
    if (posix_memalign(&bad, 3, 256) == 0) keep[8][10] = bad; /* EINVAL: no block */
}

NOINLINE void site_aligned_alloc(void) {
    for (int i = 0; i < 4; i++) keep[9][i] = aligned_alloc(64, 512); /* ledger: site=site_aligned_alloc objects=4 bytes=2048 */
}

NOINLINE void site_memalign(void) {
    for (int i = 0; i < 3; i++) keep[10][i] = memalign(128, 384); /* ledger: site=site_memalign objects=3 bytes=1152 */
}

NOINLINE void site_valloc(void) {
    for (int i = 0; i < 2; i++) keep[11][i] = valloc(1000); /* ledger: site=site_valloc objects=2 bytes=2000 */
}

NOINLINE void site_pvalloc(void) {
    /* pvalloc rounds the size up to a whole page. */
    for (int i = 0; i < 2; i++) keep[12][i] = pvalloc(5000); /* ledger: site=site_pvalloc objects=2 bytes=16384 */
}

NOINLINE void site_failures(void) {
    keep[13][0] = malloc(SIZE_MAX - 4096); /* ledger: site=site_failures objects=0 bytes=0 */
    free(NULL);
    free(NULL);
}

NOINLINE void site_churn(void) {
    for (int i = 0; i < 2000; i++) {
        void *volatile p = malloc(16 + i % 512); /* ledger: site=site_churn objects=0 bytes=0 */
        p = realloc(p, 1024 + i % 4096);
        free(p);
    }
}

int main(void) {
    site_malloc();
    site_calloc();
    site_realloc_move();
    site_realloc_shrink();
    site_realloc_null();
    site_realloc_zero();
    site_realloc_fail();
    site_reallocarray();
    site_posix_memalign();
    site_aligned_alloc();
    site_memalign();
    site_valloc();
    site_pvalloc();
    site_failures();
    site_churn();
    return 0;
}
