/* A process that lives about 50 ms: it allocates in its own code and in a library it loads
 * with dlopen just before exiting. Traced in launch mode, every block must be counted and
 * every site named, though the process is gone by the time the report is printed.
 *
 * Ledger comments as in alloc_fns.c; the plugin's are in lib/plugin.c. */
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void *volatile keep[16];
#define NOINLINE __attribute__((noinline))

NOINLINE void s_main(void) {
    for (int i = 0; i < 4; i++) keep[i] = malloc(64); /* ledger: site=s_main objects=4 bytes=256 */
}

int main(void) {
    s_main();
    void *lib = dlopen(PLUGIN, RTLD_NOW);
    if (!lib) return 1;
    void (*plugin)(void) = (void (*)(void))dlsym(lib, "s_plugin");
    struct timespec t = {0, 50 * 1000 * 1000};
    nanosleep(&t, 0);
    plugin();
    return 0;
}
