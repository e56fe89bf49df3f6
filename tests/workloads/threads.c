/* Four threads leak fixed counts at two named sites while churning temporaries (malloc, realloc,
 * free) in between, all started together so their allocator calls interleave.
 * Ledger comments give totals over all threads (see alloc_fns.c for the form). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define THREADS 4
#define NOINLINE __attribute__((noinline))
static pthread_barrier_t start;
static void *volatile keep[THREADS][400];

NOINLINE void *thread_leak_a(void) {
    return malloc(64); /* ledger: site=thread_leak_a objects=1000 bytes=64000 */
}

NOINLINE void *thread_leak_b(void) {
    return calloc(10, 100); /* ledger: site=thread_leak_b objects=400 bytes=400000 */
}

NOINLINE void thread_churn(int round) {
    for (int i = 0; i < 40; i++) {
        void *volatile p = malloc(8 + (round * 7 + i) % 700); /* ledger: site=thread_churn objects=0 bytes=0 */
        p = realloc(p, 200 + (round + i) % 3000); /* ledger: site=thread_churn objects=0 bytes=0 */
        free(p);
    }
}

static void *worker(void *arg) {
    long t = (long)arg;
    pthread_barrier_wait(&start);
    int n = 0;
    for (int round = 0; round < 250; round++) {
        keep[t][n++] = thread_leak_a();
        if (round % 5 < 2) keep[t][n++] = thread_leak_b();
        thread_churn(round);
    }
    return 0;
}

int main(void) {
    pthread_t th[THREADS];
    pthread_barrier_init(&start, 0, THREADS);
    for (long t = 0; t < THREADS; t++) pthread_create(&th[t], 0, worker, (void *)t);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], 0);
    return 0;
}
