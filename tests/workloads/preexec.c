/* Allocates its ledger from a library ld.so loads after this program's exec
 * (lib/preexec_lib.c), then execs the program given: by the time muppy hears of that exec the
 * image's mappings are gone, yet its rows must be named (tests/processes.rs). */
#include <stdio.h>
#include <unistd.h>

void *preexec_keep(int i);

int main(int argc, char **argv) {
    static void *volatile keep[8];
    for (int i = 0; i < 8; i++) keep[i] = preexec_keep(i);
    if (argc < 2) return 0;
    execv(argv[1], argv + 1);
    perror("execv");
    return 1;
}
