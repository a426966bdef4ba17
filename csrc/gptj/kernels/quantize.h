// Quantization of weight rows with ggml's own quantizers (ggml_quantize_chunk), on several
// threads. The file formats around it (GGUF writing, type policy) live in Python
// (python/gptj_ggml/quantize.py); this is only the arithmetic, checked so that ggml never asserts.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ggml.h"

namespace gptj {

// True for the types quantize_rows accepts: f16, bf16, and the quantized types a GPT-J
// matrix may have (those Model loads) that need no importance matrix.
bool is_quantize_target(ggml_type type);

// Bytes of n_rows rows of row_length values of `type`.
size_t quantized_size(ggml_type type, int64_t n_rows, int64_t row_length);

// Quantizes n_rows rows of row_length floats from `src` into `dst` (which must hold
// quantized_size(type, n_rows, row_length) bytes), splitting the rows over n_threads threads
// (<= 0: the physical cores). Throws Error(invalid_argument) for a type that is not a target, a
// row length that is not a multiple of the type's block size or more threads than
// max_thread_count() (threads.h), before calling ggml.
void quantize_rows(ggml_type type, const float * src, void * dst, int64_t n_rows, int64_t row_length, int n_threads);

}  // namespace gptj
