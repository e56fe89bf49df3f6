/* A steady allocator, for the daemon's soak test: holds 512 blocks from steady_block and
 * replaces one every millisecond or so, round robin, for SECONDS (first argument, default
 * 100); then exits without freeing them. The 512 blocks live at the exit are those of the last
 * 512 calls, sizes 64 + i % 128: four full rounds of the 128 sizes, 65280 bytes, whatever the
 * count of calls. */
#include <stdlib.h>
#include <time.h>

#define HELD 512
#define NOINLINE __attribute__((noinline))

static void *volatile held[HELD];

NOINLINE void *steady_block(long i) {
    return malloc(64 + (i & 127));
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 100;
    struct timespec start, now, tick = {0, 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    long i = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double t = (double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
        /* At least 512 calls, so that every slot holds a block of this loop's. */
        if (t >= seconds && i >= HELD) break;
        free(held[i % HELD]);
        held[i % HELD] = steady_block(i);
        i++;
        nanosleep(&tick, 0);
    }
    return 0;
}
