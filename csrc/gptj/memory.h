// The memory the weights live in: the model file's read-only mapping, huge-page advice (for the
// buffers we allocate and for that mapping), and handing mapped pages back once the process no
// longer needs them. The advice is only advice: where the system does not support it, nothing
// changes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ggml-backend.h"

namespace gptj {

// A whole file mapped read-only and shared, unmapped when destroyed; move-only. MAP_SHARED +
// PROT_READ: the page cache is the only copy of the weights, so a second open of the same file
// (or a second process) costs no memory and almost no time.
class FileMapping {
public:
    FileMapping() = default;  // maps nothing
    // Maps the first n_bytes of the open file `fd` (which may be closed afterwards). Throws
    // Error(file_not_found) naming `path` when the system refuses.
    FileMapping(const std::string & path, int fd, size_t n_bytes);
    ~FileMapping();
    FileMapping(FileMapping && other) noexcept;
    FileMapping & operator=(FileMapping && other) noexcept;
    FileMapping(const FileMapping &) = delete;
    FileMapping & operator=(const FileMapping &) = delete;

    uint8_t * data() const { return data_; }
    size_t size() const { return size_; }

private:
    uint8_t * data_ = nullptr;
    size_t size_ = 0;
};

// Asks the kernel to back a weight buffer with 2 MiB pages (transparent huge pages, where the
// system allows them on request). Generation streams every weight once per token; with 4 KiB
// pages the TLB misses cost measurably: 4-layer GPT-J-6B-shaped f16, 2 threads, 77 ms/token
// with huge pages against 92 without.
void advise_huge_pages(ggml_backend_buffer_t buffer);

// The same advice for the mapping of the model file. Pages of the file read through it then
// enter the page cache as 2 MiB folios where the file system supports large folios (ext4, xfs,
// btrfs on Linux 6.x), and the mapping uses PMD entries for them: far fewer TLB misses when
// every weight is streamed once per token (4-layer GPT-J-6B-shaped f16: 161 -> 142 ms per full
// read of the file). Pages already cached as small folios stay small.
void advise_huge_pages(const FileMapping & mapping);

// Drops this process's mapping of the whole pages inside [begin, end) of a read-only file
// mapping: the page cache keeps them, the next access maps them again.
void release_mapped_pages(const char * begin, const char * end);

// The machine's physical memory in bytes (0 when the system does not say). A session whose
// KV cache and compute buffers exceed it is refused: under overcommit the allocation itself
// succeeds, and the process would be killed while the cache fills.
size_t physical_memory_bytes();

// release_mapped_pages' signature, for the kernels that take it as a ggml custom op's userdata.
using ReleasePages = void (*)(const char * begin, const char * end);

}  // namespace gptj
