/* Leak-check benchmark workload: builds a heap of N blocks of SIZE bytes (default 1,000,000
 * of 1024: 1 GiB), linked in lists of 1000 from a global table, then drops one list in every
 * 100 (its head pointer cleared): 1% of the blocks leaked, in cliques of 1000. Prints
 * "ready blocks=N lost=L" and waits (for a leak check) until killed.
 * Arguments: N SIZE. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LIST 1000

static void **heads;

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long size = argc > 2 ? atol(argv[2]) : 1024;
    if (size < (long)sizeof(void *))
        size = sizeof(void *);
    long lists = (n + LIST - 1) / LIST;
    heads = calloc(lists, sizeof(void *));
    long lost = 0;
    for (long l = 0; l < lists; l++) {
        void *next = NULL;
        long len = n - l * LIST < LIST ? n - l * LIST : LIST;
        for (long i = 0; i < len; i++) {
            void **b = malloc(size);
            memset(b, 0, size);
            b[0] = next;
            next = b;
        }
        if (l % 100 == 50)
            lost += len; /* the head is dropped: the whole list is lost */
        else
            heads[l] = next;
    }
    printf("ready blocks=%ld lost=%ld\n", n + 1, lost);
    fflush(stdout);
    for (;;)
        pause();
}
