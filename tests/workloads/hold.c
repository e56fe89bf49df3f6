/* Memory benchmark workload: allocates N blocks of 16..79 bytes, keeps every one, and exits
 * without freeing, so a tracer ends with N live blocks at one site.
 * Argument: N (default 1000). Prints "held=N". */
#include <stdio.h>
#include <stdlib.h>

static void *volatile sink;

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    for (long i = 0; i < n; i++)
        sink = malloc(16 + (i & 63));
    printf("held=%ld\n", n);
    return 0;
}
