/* Leaks in phases, each started by a line on stdin and acknowledged with "phaseN done" on
 * stderr, so a test can check the periodic diffs against the state after each phase:
 *   phase 1: 10 blocks of 100 at phase_grow            -> grow 10/1000
 *   phase 2: frees 4 of them, 3 blocks of 2048 at phase_more -> grow 6/600, more 3/6144 */
#include <stdlib.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
static void *volatile grow[10];
static void *volatile more[3];

NOINLINE void phase_grow(void) {
    for (int i = 0; i < 10; i++) grow[i] = malloc(100);
}

NOINLINE void phase_more(void) {
    for (int i = 0; i < 3; i++) more[i] = malloc(2048);
}

static void wait_line(void) {
    char c;
    while (read(0, &c, 1) == 1 && c != '\n') {}
}

int main(void) {
    wait_line();
    phase_grow();
    write(2, "phase1 done\n", 12);
    wait_line();
    for (int i = 0; i < 4; i++) free(grow[i]);
    phase_more();
    write(2, "phase2 done\n", 12);
    wait_line();
    return 0;
}
