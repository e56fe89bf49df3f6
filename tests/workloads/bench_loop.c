/* The benchmark loop: malloc/free pairs of varying small sizes, leaky-style (one block in 64 kept
 * until the end), timed with CLOCK_MONOTONIC. Prints "calls=N ns_per_call=X" on stdout.
 * Argument: number of malloc/free pairs (default 2000000). Two threads with argument "2 N". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long pairs = 2000000;
static void *volatile sink;

static void *loop(void *arg) {
    (void)arg;
    void **kept = malloc(sizeof(void *) * (pairs / 64 + 1));
    long k = 0;
    for (long i = 0; i < pairs; i++) {
        void *p = malloc(16 + (i & 255));
        sink = p;
        if ((i & 63) == 0) kept[k++] = p; else free(p);
    }
    for (long i = 0; i < k; i++) free(kept[i]);
    free(kept);
    return 0;
}

int main(int argc, char **argv) {
    int threads = argc > 2 ? atoi(argv[1]) : 1;
    if (argc > 1) pairs = atol(argv[argc > 2 ? 2 : 1]);
    struct timespec a, b;
    pthread_t th[16];
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int t = 0; t < threads; t++) pthread_create(&th[t], 0, loop, 0);
    for (int t = 0; t < threads; t++) pthread_join(th[t], 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    long calls = 2 * pairs * threads;
    printf("calls=%ld ns_per_call=%.1f seconds=%.3f\n", calls, ns / threads / (2.0 * pairs), ns / 1e9);
    return 0;
}
