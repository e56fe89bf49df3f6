/* Another tracer, as gdb or strace would be: seizes the thread given (without stopping it),
 * says "held", and keeps it until its stdin closes (tests/tests/freeze.rs). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    pid_t tid = atoi(argv[1]);
    if (ptrace(PTRACE_SEIZE, tid, 0, 0) != 0) {
        perror("PTRACE_SEIZE");
        return 1;
    }
    printf("held %d\n", tid);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
