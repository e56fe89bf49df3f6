/* Allocation sites with deeply templated C++ names, hundreds of characters once demangled, as
 * a real C++ program has (LLVM, Boost, the standard library): the tests of how tables fit
 * names to a width (tests/names.rs) check that each row keeps its file:line and that JSON and
 * --full-names keep the names whole.
 *
 * Ledger comments as in alloc_fns.c, except that site=F is one word of the function's name
 * (the rest is templates): the test finds each row by its file:line and checks that its
 * name holds F. */
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

/* No inlining and no cloning (a clone's name would end in "[clone .constprop.0]"). */
#define NOIPA __attribute__((noipa))

template <unsigned N>
struct Payload {
    char data[N];
};

static void *volatile keep[3][16];

namespace muppy_workload {
namespace storage {
namespace detail {

template <typename T>
struct Policy {};

template <typename T, typename U>
struct Tag {};

template <typename Key, typename Value, typename Hash, typename Alloc>
struct Registry {
    template <typename Label>
    NOIPA static void populate(int n) {
        for (int i = 0; i < n; i++) keep[0][i] = new Payload<96>; /* ledger: site=populate objects=12 bytes=1152 */
        for (int i = 0; i < n; i++) delete new Payload<96>; /* ledger: site=populate objects=0 bytes=0 */
    }
};

}  // namespace detail

template <typename Inner>
struct Stage {};

template <typename First, typename Second, typename Third>
struct Pipeline {
    template <typename Sink>
    NOIPA void build_stages(int n) {
        for (int i = 0; i < n; i++) keep[1][i] = new Payload<200>; /* ledger: site=build_stages objects=7 bytes=1400 */
    }
};

}  // namespace storage
}  // namespace muppy_workload

template <typename Map, typename Callback>
NOIPA void make_nodes(unsigned long n) {
    for (unsigned long i = 0; i < n; i++) keep[2][i] = new Payload<64>; /* ledger: site=make_nodes objects=5 bytes=320 */
}

using namespace muppy_workload::storage;

int main(int argc, char **argv) {
    (void)argv;
    int base = argc - 1; /* 0: the counts below are the ledger's, but not constants to GCC */
    detail::Registry<std::map<std::string, std::vector<std::pair<int, std::string>>>,
                     std::function<void(const std::string &, std::vector<int> &)>,
                     std::hash<std::string>,
                     std::allocator<std::pair<const std::string, std::unique_ptr<int>>>>::
        populate<detail::Tag<detail::Policy<std::string>, std::map<int, std::wstring>>>(base + 12);
    Pipeline<Stage<Stage<std::vector<std::map<std::string, int>>>>,
             Stage<std::unordered_map<std::string, std::vector<std::string>>>,
             Stage<std::function<std::string(std::map<std::string, std::string> &)>>>
        pipeline;
    pipeline.build_stages<std::vector<std::unique_ptr<std::map<std::string, double>>>>(base + 7);
    make_nodes<std::unordered_map<std::string, std::map<std::wstring, std::vector<long>>>,
               std::function<bool(const std::vector<std::string> &)>>(
        static_cast<unsigned long>(base + 5));
    return 0;
}
