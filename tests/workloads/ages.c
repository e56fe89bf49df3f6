/* Blocks of known sizes and ages:
 *   old():   N blocks of 100 bytes (N = argv[1], default 10), then a 2 s sleep
 *   young(): 5 blocks of 200 bytes and 3 of 4000 bytes, just before exit
 * so at exit the old blocks are at least 2 s old and the young ones much younger. */
#include <stdlib.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noipa))
static void *volatile kept[1000];
static int n;

NOINLINE void old(int count) {
    for (int i = 0; i < count; i++) kept[n++] = malloc(100); /* ledger: site=old objects=10 bytes=1000 */
}

NOINLINE void young(void) {
    for (int i = 0; i < 5; i++) kept[n++] = malloc(200); /* ledger: site=young objects=5 bytes=1000 */
    for (int i = 0; i < 3; i++) kept[n++] = malloc(4000); /* ledger: site=young objects=3 bytes=12000 */
}

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 10;
    if (count > 900) count = 900;
    old(count);
    sleep(2);
    young();
    return 0;
}
