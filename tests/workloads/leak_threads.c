/* Many threads for the leak check's freeze: on a line `go` on stdin it starts N threads (argument,
 * default 200). Each keeps one 300-byte block in a local (reachable from its stack), leaks one
 * 500-byte block (definitely lost), then counts forever, 50 ms apart. Main prints `started N`
 * once every thread has counted, then answers each line `min` with `min M`, M the smallest
 * count of any thread: it grows only if every thread runs. Lines on stderr; `ready <pid>` first.
 * The end of stdin ends it (status 0). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "leakcase.h" /* NOINLINE, ESCAPE, say, get_line, scrub_stack */

#define MAX_THREADS 1024

static volatile long counts[MAX_THREADS];

NOINLINE void *thread_keep(void) {
    void *p = malloc(300); /* leak: site=thread_keep kind=reachable objects=200 bytes=60000 */
    memset(p, 0, 300);
    return p;
}

NOINLINE void thread_leak(void) {
    void *p = malloc(500); /* leak: site=thread_leak kind=definitely_lost objects=200 bytes=100000 */
    memset(p, 0, 500);
    ESCAPE(p);
}

static void *worker(void *arg) {
    long i = (long)arg;
    void *volatile held = thread_keep();
    thread_leak();
    scrub_stack();
    struct timespec nap = {0, 50 * 1000 * 1000};
    for (;;) {
        counts[i]++;
        nanosleep(&nap, 0);
    }
    return held;
}

static long min_count(int n) {
    long m = counts[0];
    for (int i = 1; i < n; i++)
        if (counts[i] < m) m = counts[i];
    return m;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200;
    if (n < 1 || n > MAX_THREADS) return 2;
    char cmd[64];
    say("ready %d\n", getpid());
    while (get_line(cmd, sizeof cmd) && strcmp(cmd, "go") != 0) {}
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, worker, (void *)i)) return 3;
    }
    struct timespec wait = {0, 10 * 1000 * 1000};
    while (min_count(n) == 0) nanosleep(&wait, 0);
    say("started %d\n", n);
    while (get_line(cmd, sizeof cmd))
        if (strcmp(cmd, "min") == 0) say("min %ld\n", min_count(n));
    return 0;
}
