/* muppy's demo: a small "server" that handles requests for a few seconds. Each request
 * allocates a buffer and a session; the buffer is freed, but one session in three is forgotten
 * in a cache that is never evicted. Run it under `cargo xtask demo`. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct session { char user[48]; long id; };
static struct session *volatile cache[100000];
static int cached;

__attribute__((noinline)) static struct session *new_session(long id) {
    struct session *s = malloc(sizeof *s);
    s->id = id;
    strcpy(s->user, "guest");
    return s;
}

__attribute__((noinline)) static char *read_request(long id) {
    char *buf = calloc(1, 512 + id % 512);
    buf[0] = 'G';
    return buf;
}

__attribute__((noinline)) static void handle(long id) {
    char *req = read_request(id);
    struct session *s = new_session(id);
    if (id % 3 == 0) cache[cached++] = s; /* the leak: never evicted */
    else free(s);
    free(req);
}

int main(void) {
    struct timespec pause = {0, 2000000}; /* 2 ms between requests */
    for (long id = 0; id < 1500; id++) {
        handle(id);
        nanosleep(&pause, 0);
    }
    return 0;
}
