/* C++ operator new and delete in their forms: plain, array, nothrow, aligned and sized. The
 * sites are extern "C" so that they are named plainly. Built against libstdc++'s operators
 * (which call malloc) and against tcmalloc's and jemalloc's own (which do not).
 *
 * Ledger comments as in alloc_fns.c. */
#include <new>

struct Node {
    char data[48];
};
struct alignas(64) Wide {
    char data[128];
};

static void *volatile keep[8][16];
#define NOINLINE __attribute__((noinline))

extern "C" NOINLINE void c_new(void) {
    for (int i = 0; i < 10; i++) keep[0][i] = new Node; /* ledger: site=c_new objects=10 bytes=480 */
    for (int i = 0; i < 20; i++) delete new Node; /* ledger: site=c_new objects=0 bytes=0 */
}

extern "C" NOINLINE void c_new_array(void) {
    for (int i = 0; i < 4; i++) keep[1][i] = new char[1000]; /* ledger: site=c_new_array objects=4 bytes=4000 */
    for (int i = 0; i < 6; i++) delete[] new char[300]; /* ledger: site=c_new_array objects=0 bytes=0 */
}

extern "C" NOINLINE void c_new_nothrow(void) {
    for (int i = 0; i < 3; i++) keep[2][i] = new (std::nothrow) Node; /* ledger: site=c_new_nothrow objects=3 bytes=144 */
}

extern "C" NOINLINE void c_new_aligned(void) {
    for (int i = 0; i < 5; i++) keep[3][i] = new Wide; /* ledger: site=c_new_aligned objects=5 bytes=640 */
    for (int i = 0; i < 7; i++) delete new Wide; /* ledger: site=c_new_aligned objects=0 bytes=0 */
}

int main() {
    c_new();
    c_new_array();
    c_new_nothrow();
    c_new_aligned();
    return 0;
}
