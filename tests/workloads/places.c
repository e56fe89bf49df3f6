/* A process whose roots muppy's leak check names (tests/tests/places.rs): a global, a thread
 * local, locals in a function of the main thread and of another thread, and an anonymous
 * mapping. Prints where each is and blocks; a line on stdin ends it. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

void *g_roots[4];
static __thread void *t_slot;
static pthread_barrier_t ready;
static int pipefd[2];
static void *volatile *thread_local_at;
static int thread_tid;
static void *volatile *thread_tls_at;

__attribute__((noinline)) static void hold_in_thread(void) {
    void *volatile local = malloc(32);
    t_slot = local;
    thread_local_at = &local;
    thread_tls_at = &t_slot;
    thread_tid = gettid();
    pthread_barrier_wait(&ready);
    char c;
    (void)!read(pipefd[0], &c, 1);
    free(local);
}

static void *thread_main(void *arg) {
    (void)arg;
    hold_in_thread();
    return 0;
}

__attribute__((noinline)) static void hold_in_main(void *anon) {
    void *volatile local = malloc(48);
    t_slot = local;
    printf("ready pid=%d global=%p main_local=%p main_tls=%p thread=%d thread_local=%p "
           "thread_tls=%p anon=%p\n",
           getpid(), (void *)&g_roots[1], (void *)&local, (void *)&t_slot, thread_tid,
           (void *)thread_local_at, (void *)thread_tls_at, anon);
    fflush(stdout);
    (void)getchar();
    free(local);
}

int main(void) {
    pthread_t t;
    if (pipe(pipefd) != 0) return 1;
    pthread_barrier_init(&ready, 0, 2);
    g_roots[1] = malloc(64);
    if (pthread_create(&t, 0, thread_main, 0) != 0) return 1;
    pthread_barrier_wait(&ready);
    void *anon = mmap(0, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    hold_in_main((char *)anon + 0x100);
    close(pipefd[1]);
    pthread_join(t, 0);
    free(g_roots[1]);
    return 0;
}
