// Products of f32, f16 and bf16 weights with a few tokens (1-16) on AVX2 CPUs: each weight is
// converted to f32 once and multiplied with every token's f32 activations (matvec.h is the
// AVX-512 version; quantized weights take matvec_int8_avx2.h).
//
// Why: ggml's CPU kernels round the activations to f16 for f16 weights and compute one output
// row at a time; here the activations stay f32 (more accurate) and several rows stream at once.
#pragma once

#include "ggml.h"

namespace gptj {

// Whether the AVX2 kernel multiplies these weights (f32, f16 or bf16, contiguous, in plain host
// memory) on this CPU: AVX2 present, AVX-512 absent or capped off by GPTJ_GGML_ISA.
bool matvec_avx2_supported(const ggml_tensor * weights, bool in_plain_memory);

// ggml custom op: dst F32 [m, n] = src[0] (weights [k, m]) times src[1] (F32 [k, n], contiguous
// rows), n <= kMatvecMaxTokens (matvec.h). Thread ith of nth takes a contiguous range of rows.
void matvec_avx2_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
