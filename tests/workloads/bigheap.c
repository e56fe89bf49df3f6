/* Leak-check benchmark workload: builds a heap of N blocks of SIZE bytes (default 1,000,000
 * of 1024: 1 GiB), linked in lists of LIST (default 1000) from a global table, and drops one
 * list in every DROP (default 100; 1 drops every list): with the defaults 1% of the blocks
 * leaked, in cliques of 1000. Prints "ready blocks=B lists=L lost=N" (B counts the table) and
 * waits (for a leak check): LINGER seconds, then exits 0 (its heap still allocated, as a
 * check at exit wants it), or until killed without LINGER.
 * Arguments: N SIZE LIST DROP LINGER. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void **heads;

/* Builds the lists; returns how many blocks were dropped. Not inlined: its registers and
 * frame, where the last pointers were, are gone (below the stack pointer) once it returns. */
static __attribute__((noinline)) long build(long n, long size, long list, long drop,
                                            long lists) {
    long lost = 0;
    void *volatile next = NULL;
    for (long l = 0; l < lists; l++) {
        next = NULL;
        long len = n - l * list < list ? n - l * list : list;
        for (long i = 0; i < len; i++) {
            void **b = malloc(size);
            memset(b, 0, size);
            b[0] = (void *)next;
            next = b;
        }
        if (l % drop == drop / 2)
            lost += len; /* the head is dropped: the whole list is lost */
        else
            heads[l] = (void *)next;
    }
    next = NULL;
    return lost;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long size = argc > 2 ? atol(argv[2]) : 1024;
    long list = argc > 3 ? atol(argv[3]) : 1000;
    long drop = argc > 4 ? atol(argv[4]) : 100;
    if (size < (long)sizeof(void *))
        size = sizeof(void *);
    if (list < 1)
        list = 1;
    if (drop < 1)
        drop = 1;
    long lists = (n + list - 1) / list;
    heads = calloc(lists, sizeof(void *));
    long lost = build(n, size, list, drop, lists);
    printf("ready blocks=%ld lists=%ld lost=%ld\n", n + 1, lists, lost);
    fflush(stdout);
    if (argc > 5) {
        sleep((unsigned)atoi(argv[5]));
        return 0;
    }
    for (;;)
        pause();
}
