// ggml's CPU backend has "extra" buffer types; one of them (CPU_REPACK) stores some quantized
// matrices (q4_0, q4_K, q8_0, iq4_nl, ... on AVX2) interleaved for faster mat-vec and mat-mat
// kernels, as llama.cpp uses by default. Repacking copies the matrix, so it trades the mmap's
// zero-copy load for speed: the Model makes it optional.
#pragma once

#include <functional>
#include <vector>

#include "ggml-cpp.h"

namespace gptj {

// Allocates the matrices the repack layout supports in one CPU_REPACK buffer and fills them
// from source(tensor) (the mapped file), on n_threads threads, calling done(tensor) after each
// (so the caller can hand its source pages back at once: the process then never holds both
// copies of every matrix). Tensors it does not take keep no buffer. Returns the buffer, or
// nullptr when ggml offers no repack layout for any of them.
ggml_backend_buffer_ptr repack_matrices(const std::vector<ggml_tensor *> & matrices,
                                        const std::function<const void *(const ggml_tensor *)> & source,
                                        const std::function<void(const ggml_tensor *)> & done, int n_threads);

}  // namespace gptj
