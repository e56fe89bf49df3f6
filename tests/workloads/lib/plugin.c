/* A library short.c loads with dlopen just before it exits. */
#include <stdlib.h>

static void *volatile keep[16];

void s_plugin(void) {
    for (int i = 0; i < 6; i++) keep[i] = malloc(32); /* ledger: site=s_plugin objects=6 bytes=192 */
}
