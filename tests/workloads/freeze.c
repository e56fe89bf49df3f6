/* A process for muppy's ptrace thread to freeze (tests/tests/freeze.rs): spinning threads,
 * sleeping threads, and a thread that keeps creating short-lived threads, so a freeze that
 * misses a thread leaves it running. Prints where its marker, a 16 MiB patterned heap buffer, a
 * page that cannot be read and its SIGUSR1 count live; on a line on stdin it stops its threads
 * and prints what it counted and whether its memory is as it left it. argv[1]: how many sleeping
 * threads (3 by default). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define SPINNERS 4
#define MAX_SLEEPERS 1000
#define BIG (16UL << 20)

volatile unsigned long marker = 0x6d75707079465a21UL;
static volatile sig_atomic_t usr1;
static atomic_int stop;
static volatile unsigned long spins[SPINNERS];
static atomic_long spawned;
static atomic_int sleeper_tid;

static void on_usr1(int s) {
    (void)s;
    usr1++;
}

static void *spinner(void *arg) {
    long i = (long)arg;
    while (!atomic_load(&stop)) spins[i]++;
    return 0;
}

static void *sleeper(void *arg) {
    (void)arg;
    atomic_store(&sleeper_tid, gettid());
    while (!atomic_load(&stop)) usleep(10000);
    return 0;
}

static void *short_lived(void *arg) {
    (void)arg;
    return 0;
}

static void *spawner(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        pthread_t t;
        if (pthread_create(&t, 0, short_lived, 0) == 0) {
            pthread_detach(t);
            atomic_fetch_add(&spawned, 1);
        }
        usleep(100);
    }
    return 0;
}

int main(int argc, char **argv) {
    int sleepers = argc > 1 ? atoi(argv[1]) : 3;
    if (sleepers < 1 || sleepers > MAX_SLEEPERS) return 2;
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, 0);
    unsigned char *heap = malloc(BIG);
    for (unsigned long i = 0; i < BIG; i++) heap[i] = (unsigned char)(i * 7 + 3);
    long page = sysconf(_SC_PAGESIZE);
    unsigned char *guard = mmap(0, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    guard[0] = 0x11;
    guard[2 * page] = 0x22;
    mprotect(guard + page, page, PROT_NONE);

    static pthread_t th[SPINNERS + MAX_SLEEPERS + 1];
    int n = 0;
    for (long i = 0; i < SPINNERS; i++) pthread_create(&th[n++], 0, spinner, (void *)i);
    for (long i = 0; i < sleepers; i++) pthread_create(&th[n++], 0, sleeper, 0);
    pthread_create(&th[n++], 0, spawner, 0);
    while (atomic_load(&spawned) < 10 || !atomic_load(&sleeper_tid)) usleep(1000);

    printf("ready pid=%d marker=%p heap=%p size=%lu guard=%p page=%ld usr1=%p sleeper=%d\n", getpid(),
           (void *)&marker, (void *)heap, BIG, (void *)guard, page, (void *)&usr1,
           atomic_load(&sleeper_tid));
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 2;
    atomic_store(&stop, 1);
    for (int i = 0; i < n; i++) pthread_join(th[i], 0);
    int same = 1;
    for (unsigned long i = 0; i < BIG; i++) same &= heap[i] == (unsigned char)(i * 7 + 3);
    int spun = 1;
    for (int i = 0; i < SPINNERS; i++) spun &= spins[i] > 0;
    printf("done usr1=%d heap_same=%d spun=%d spawned>0=%d\n", (int)usr1, same, spun,
           atomic_load(&spawned) > 0);
    return 0;
}
