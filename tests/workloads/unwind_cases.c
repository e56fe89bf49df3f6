/* Stacks that a copy of the stack, unwound with .eh_frame, must walk to their true end or cut
 * with the reason. Built without frame pointers (-fomit-frame-pointer, see VARIANTS in
 * build.rs), so only the call frame information walks them. Every block stays live.
 *
 * 1. A thread with a 64 KiB stack (its top, and the thread's control block above it, are less
 *    than a copy away from where it allocates): from a shallow call, 7 blocks of 112 bytes,
 *    and from three frames deeper, 9 blocks of 208 bytes. Walked through the start function
 *    into libc's start_thread and clone3, where the stack ends.
 * 2. A recursion 2,000 frames deep (each frame ≈300 bytes: ≈600 KB, far more than a copy)
 *    allocating at the bottom, 3 times: 3 blocks of 3000 bytes, whose stack is the innermost
 *    frames and says it goes deeper.
 * 3. A signal handler that allocates: SIGUSR1 raised 5 times, 5 blocks of 321 bytes, whose
 *    stack is the handler's frames, cut at the kernel's signal frame.
 *
 * noipa keeps each function whole and named as written; the volatile store after each call
 * keeps it a call, not a jump. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#define NOINLINE __attribute__((noinline, noipa))
#define DEPTH 2000
static void *volatile kept[64];
static volatile int n;
/* Loop counts the compiler cannot see, so that it cannot unroll a loop into several calls,
 * each with a return address (and a stack) of its own. */
static volatile int shallow_n = 7, deep_n = 9, recursions = 3, raises = 5;

/* 1. The thread. */
NOINLINE void shallow_site(void) {
    kept[n] = malloc(112); /* ledger: site=shallow_site objects=7 bytes=784 */
    n++;
}
NOINLINE void deep_site(void) {
    kept[n] = malloc(208); /* ledger: site=deep_site objects=9 bytes=1872 */
    n++;
}
NOINLINE void deep2(void) {
    deep_site(); /* frame: deep2 */
    n += 0;
}
NOINLINE void deep1(void) {
    deep2(); /* frame: deep1 */
    n += 0;
}
NOINLINE void *small_thread(void *arg) {
    for (int i = 0; i < shallow_n; i++) shallow_site(); /* frame: thread_shallow */
    for (int i = 0; i < deep_n; i++) deep1(); /* frame: thread_deep */
    n += 0;
    return arg;
}

/* 2. The recursion. */
NOINLINE void bottom_site(void) {
    kept[n] = malloc(3000); /* ledger: site=bottom_site objects=3 bytes=9000 */
    n++;
}
NOINLINE void recurse(int depth) {
    volatile char pad[256]; /* a frame the size of a real function's */
    pad[0] = (char)depth;
    if (depth == 0)
        bottom_site(); /* frame: recurse_bottom */
    else
        recurse(depth - 1); /* frame: recurse */
    pad[1] = pad[0];
}

/* 3. The signal handler. */
NOINLINE void handler_site(void) {
    kept[n] = malloc(321); /* ledger: site=handler_site objects=5 bytes=1605 */
    n++;
}
NOINLINE void on_usr1(int sig) {
    handler_site(); /* frame: on_usr1 */
    n += sig - sig;
}

int main(void) {
    pthread_attr_t attr;
    pthread_t t;
    if (pthread_attr_init(&attr) || pthread_attr_setstacksize(&attr, 64 << 10)) return 1;
    if (pthread_create(&t, &attr, small_thread, NULL) || pthread_join(t, NULL)) return 1;

    for (int i = 0; i < recursions; i++) recurse(DEPTH);

    struct sigaction sa = {.sa_handler = on_usr1};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL)) return 1;
    for (int i = 0; i < raises; i++) raise(SIGUSR1);
    return n == 7 + 9 + 3 + 5 ? 0 : 1;
}
