/* Memory the program maps itself, apart from its heap: kept anonymous mappings, mappings
 * unmapped again, a mapping cut in two by a partial munmap, one moved and grown by mremap. A
 * file mapping and a 1 MiB malloc (which glibc serves with its own mmap) must not count as
 * the program's mappings; the malloc is a heap block.
 *
 * What must stay mapped, per site (`frame:` markers name the lines):
 *   m_keep    3 regions, 3 x 64 KiB
 *   m_cut     2 regions, 2 x 4 KiB (pages 0 and 3 of 4)
 *   m_move    1 region, 64 KiB (mapped as 4 KiB, grown by mremap)
 *   nothing for m_gone and for the file mapping. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)
static void *volatile keep[8];

NOINLINE void m_keep(void) {
    for (int i = 0; i < 3; i++) keep[i] = mmap(0, 65536, PROT_READ | PROT_WRITE, ANON, -1, 0); /* frame: keep */
}

NOINLINE void m_gone(void) {
    for (int i = 0; i < 2; i++) munmap(mmap(0, 8192, PROT_READ, ANON, -1, 0), 8192);
}

NOINLINE void m_cut(void) {
    char *p = mmap(0, 4 * 4096, PROT_READ, ANON, -1, 0); /* frame: cut */
    munmap(p + 4096, 2 * 4096);
}

NOINLINE void m_move(void) {
    void *p = mmap(0, 4096, PROT_READ | PROT_WRITE, ANON, -1, 0); /* frame: move */
    keep[3] = mremap(p, 4096, 65536, MREMAP_MAYMOVE);
}

NOINLINE void m_heap_and_file(void) {
    keep[4] = malloc(1 << 20); /* ledger: site=m_heap_and_file objects=1 bytes=1048576 */
    int fd = open("/proc/self/exe", O_RDONLY);
    keep[5] = mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
}

int main(void) {
    m_keep();
    m_gone();
    m_cut();
    m_move();
    m_heap_and_file();
    return 0;
}
