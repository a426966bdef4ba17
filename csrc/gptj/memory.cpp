#include "gptj/memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "gptj/error.h"

namespace gptj {

FileMapping::FileMapping(const std::string & path, int fd, size_t n_bytes) {
    void * address = ::mmap(nullptr, n_bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (address == MAP_FAILED) {
        throw Error(Error::Kind::file_not_found, path + ": cannot map: " + std::strerror(errno));
    }
    data_ = static_cast<uint8_t *>(address);
    size_ = n_bytes;
}

FileMapping::~FileMapping() {
    if (data_ != nullptr) ::munmap(data_, size_);
}

FileMapping::FileMapping(FileMapping && other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

FileMapping & FileMapping::operator=(FileMapping && other) noexcept {
    if (this != &other) {
        if (data_ != nullptr) ::munmap(data_, size_);
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

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

void advise_huge_pages(const FileMapping & mapping) {
#ifdef MADV_HUGEPAGE
    ::madvise(mapping.data(), mapping.size(), MADV_HUGEPAGE);
#else
    (void) mapping;
#endif
}

void release_mapped_pages(const char * begin, const char * end) {
    static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;  // whole pages only
    const uintptr_t last = reinterpret_cast<uintptr_t>(end) / page * page;
    if (last > first) ::madvise(reinterpret_cast<void *>(first), last - first, MADV_DONTNEED);
}

size_t physical_memory_bytes() {
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page_size = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page_size <= 0) return 0;
    return static_cast<size_t>(pages) * static_cast<size_t>(page_size);
}

}  // namespace gptj
