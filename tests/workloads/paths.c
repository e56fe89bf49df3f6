/* Two call paths, three frames deep, reach one allocating function:
 *   main -> a1 -> a2 -> a3 -> make_node: 300 blocks of 48 bytes
 *   main -> b1 -> b2 -> b3 -> make_node: 200 blocks of 64 bytes
 * Every frame is marked with its name, so a test can derive the exact stack, line by line.
 * Built with frame pointers (see cflags), and as nofp_paths without them (-O2
 * -fomit-frame-pointer, see VARIANTS in build.rs), as distributions build, so that only the
 * call frame information (.eh_frame) can walk its stack. noipa keeps each function whole and
 * named as written (no inlining, no clones); the volatile store after each call, and
 * -fno-optimize-sibling-calls, keep every call a call, not a jump. */
#include <stdlib.h>

#define NOINLINE __attribute__((noinline, noipa))
static void *volatile kept[500];
static volatile int n;

NOINLINE void *make_node(size_t size) {
    void *p = malloc(size); /* ledger: site=make_node objects=500 bytes=27200 */
    n++;
    return p;
}

NOINLINE void a3(int k) {
    for (int i = 0; i < k; i++) kept[n] = make_node(48); /* frame: a3 */
    n += 0;
}
NOINLINE void a2(int k) {
    a3(k); /* frame: a2 */
    n += 0;
}
NOINLINE void a1(int k) {
    a2(k); /* frame: a1 */
    n += 0;
}

NOINLINE void b3(int k) {
    for (int i = 0; i < k; i++) kept[n] = make_node(64); /* frame: b3 */
    n += 0;
}
NOINLINE void b2(int k) {
    b3(k); /* frame: b2 */
    n += 0;
}
NOINLINE void b1(int k) {
    b2(k); /* frame: b1 */
    n += 0;
}

int main(void) {
    a1(300); /* frame: main_a */
    b1(200); /* frame: main_b */
    return 0;
}
