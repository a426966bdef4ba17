#include "gptj/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

namespace gptj {

void advise_huge_pages(ggml_backend_buffer_t buffer) {
#ifdef MADV_HUGEPAGE
    constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
    const auto base = reinterpret_cast<uintptr_t>(ggml_backend_buffer_get_base(buffer));
    const uintptr_t first = (base + kHugePage - 1) / kHugePage * kHugePage;
    const uintptr_t last = (base + ggml_backend_buffer_get_size(buffer)) / kHugePage * kHugePage;
    if (last > first) {
        // Advice only: where THP is disabled this fails harmlessly and 4 KiB pages are used.
        ::madvise(reinterpret_cast<void *>(first), last - first, MADV_HUGEPAGE);
    }
#else
    (void) buffer;
#endif
}

}  // namespace gptj
