/* More busy threads than CPUs: each of THREADS threads (first argument, default 4) holds 1000
 * blocks and replaces one of them at a time, round robin, as fast as it can, for SECONDS
 * (second argument, default 10); then every thread stops with its 1000 blocks live, and the
 * process sleeps HOLD seconds (third argument, default 0) before it exits without freeing them.
 * Prints "churned calls=N" on stderr when the churn ends. Whatever the timing, what it holds
 * live at the end is exactly THREADS x 1000 blocks from busy_block; the ledger is for the
 * default 4 threads (each thread's 1000 sizes, 32 + i % 64, add up to 63020 bytes). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define BLOCKS 1000
#define NOINLINE __attribute__((noinline))

static double seconds = 10;
static volatile int stop;
static long calls[64];

NOINLINE void *busy_block(long i) {
    return malloc(32 + (i & 63)); /* ledger: site=busy_block objects=4000 bytes=252080 */
}

static void *worker(void *arg) {
    long t = (long)arg;
    void **held = malloc(sizeof(void *) * BLOCKS);
    for (long i = 0; i < BLOCKS; i++) held[i] = busy_block(i);
    long n = 0;
    while (!stop) {
        for (long i = 0; i < BLOCKS; i++) {
            free(held[i]);
            held[i] = busy_block(i);
        }
        n += 2 * BLOCKS;
    }
    calls[t] = n;
    return held; /* kept live */
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    if (argc > 2) seconds = atof(argv[2]);
    int hold = argc > 3 ? atoi(argv[3]) : 0;
    if (threads < 1 || threads > 64) return 2;
    pthread_t th[64];
    for (long t = 0; t < threads; t++) pthread_create(&th[t], 0, worker, (void *)t);
    struct timespec d = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&d, 0);
    stop = 1;
    long total = 0;
    for (int t = 0; t < threads; t++) {
        void *held;
        pthread_join(th[t], &held);
        total += calls[t];
    }
    fprintf(stderr, "churned calls=%ld\n", total);
    if (hold > 0) sleep(hold);
    return 0;
}
