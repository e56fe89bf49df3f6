/* Built with -static: there is no libc.so in the process to probe. */
#include <unistd.h>
int main(void) { write(1, "hi\n", 3); return 0; }
