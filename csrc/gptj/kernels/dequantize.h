// Weights as f32, a stretch of one row at a time, for our matrix kernels (gemm_avx512.cpp,
// matvec.cpp, gemm_amx.cpp, gemm_avx2.cpp). Vectorized with AVX-512 (or AVX2 where the CPU has
// no AVX-512) for f32, f16, bf16, q8_0, q4_0 and q4_K; other quantized types, and CPUs without
// AVX2, go through ggml's own (scalar) dequantizers.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace gptj {

constexpr int kLanes = 16;  // floats in an AVX-512 register

// Whether this CPU has AVX-512F (checked once, at run time: the extension is built for any
// x86-64 and runs its AVX-512 code only where the CPU has it).
bool cpu_has_avx512f();

// Whether row_to_f32 converts `type` with vector code (the others go through ggml's scalar
// dequantizers).
bool row_to_f32_is_vectorized(ggml_type type);

// Writes weights k0 .. k0 + n of the row at `row` (a row of `type` in the file's layout) to
// dst as f32. For quantized types k0 and n are multiples of the block size (n may end at the
// row's end). Runs on any x86-64 CPU.
void row_to_f32(ggml_type type, const void * row, int64_t k0, int64_t n, float * dst);

}  // namespace gptj
