// What the engine asks of the kernel's memory management for the weights: huge pages (for the
// buffers we allocate and for the mapped model file), and handing mapped pages back once the
// process no longer needs them. Advice only: where the system does not support it, nothing changes.
#pragma once

#include <cstddef>

#include "ggml-backend.h"

namespace gptj {

// Asks the kernel to back a weight buffer with 2 MiB pages (transparent huge pages, where the
// system allows them on request). Generation streams every weight once per token; with 4 KiB
// pages the TLB misses cost measurably: 4-layer GPT-J-6B-shaped f16, 2 threads, 77 ms/token
// with huge pages against 92 without.
void advise_huge_pages(ggml_backend_buffer_t buffer);

// The same advice for a read-only mapping of the model file, n_bytes from `mapping`. Pages of
// the file read through it then enter the page cache as 2 MiB folios where the file system
// supports large folios (ext4, xfs, btrfs on Linux 6.x), and the mapping uses PMD entries for
// them: far fewer TLB misses when every weight is streamed once per token (4-layer
// GPT-J-6B-shaped f16: 161 -> 142 ms per full read of the file). Pages already cached as small
// folios stay small.
void advise_huge_pages(void * mapping, size_t n_bytes);

// Drops this process's mapping of the whole pages inside [begin, end) of a read-only file
// mapping: the page cache keeps them, the next access maps them again.
void release_mapped_pages(const char * begin, const char * end);

// release_mapped_pages' signature, for the kernels that take it as a ggml custom op's userdata.
using ReleasePages = void (*)(const char * begin, const char * end);

}  // namespace gptj
