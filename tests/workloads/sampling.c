/* Enough allocation for sampling to estimate well: two leaking sites of known totals among a
 * million short-lived temporaries.
 *   many_small: 200000 blocks of 64 bytes (12.8 MB)
 *   few_large:  2000 blocks of 16384 bytes (32 MB)
 *   churn:      1000000 malloc/free pairs of 16..271 bytes, none left */
#include <stdlib.h>

#define NOINLINE __attribute__((noinline, noipa))
static void *volatile sink;

NOINLINE void many_small(void) {
    for (int i = 0; i < 200000; i++) sink = malloc(64); /* ledger: site=many_small objects=200000 bytes=12800000 */
}

NOINLINE void few_large(void) {
    for (int i = 0; i < 2000; i++) sink = malloc(16384); /* ledger: site=few_large objects=2000 bytes=32768000 */
}

NOINLINE void churn(void) {
    for (long i = 0; i < 1000000; i++) {
        void *p = malloc(16 + (i & 255));
        sink = p;
        free(p);
    }
}

int main(void) {
    many_small();
    churn();
    few_large();
    return 0;
}
