// Loading 32 weights of a row as two f32 vectors, inline, for our AVX-512 kernels: the
// matrix-vector product converts each weight as it streams by (a separate conversion pass
// leaves the memory bus idle half the time: 0.6x ggml's speed when tried).
// Include only on x86-64 with GCC or Clang; functions using these are marked GPTJ_AVX512.
#pragma once

// AVX-512F code (F16C comes with it on every AVX-512 CPU), called only after cpu_has_avx512f().
#define GPTJ_AVX512 __attribute__((target("avx512f,f16c")))

#include <immintrin.h>

#include <cstdint>

#include "ggml.h"
#include "gptj/kernels/quant_blocks.h"

namespace gptj {

// Weights k .. k + 31 (k a multiple of 32) of a row of TYPE, as two f32 vectors.
template <ggml_type TYPE>
GPTJ_AVX512 __attribute__((always_inline)) inline void load_32_weights(const void * row, int64_t k, __m512 & low,
                                                                                __m512 & high) {
    if constexpr (TYPE == GGML_TYPE_F32) {
        const float * p = static_cast<const float *>(row) + k;
        low = _mm512_loadu_ps(p);
        high = _mm512_loadu_ps(p + 16);
    } else if constexpr (TYPE == GGML_TYPE_F16) {
        const auto * p = reinterpret_cast<const __m256i *>(static_cast<const ggml_fp16_t *>(row) + k);
        low = _mm512_cvtph_ps(_mm256_loadu_si256(p));
        high = _mm512_cvtph_ps(_mm256_loadu_si256(p + 1));
    } else if constexpr (TYPE == GGML_TYPE_BF16) {
        const auto * p = reinterpret_cast<const __m256i *>(static_cast<const uint16_t *>(row) + k);
        low = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p)), 16));
        high = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p + 1)), 16));
    } else if constexpr (TYPE == GGML_TYPE_Q8_0) {
        const BlockQ8_0 * block = static_cast<const BlockQ8_0 *>(row) + k / 32;
        const __m512 scale = _mm512_set1_ps(_cvtsh_ss(block->scale));
        const auto * q = reinterpret_cast<const __m128i *>(block->values);
        low = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), scale);
        high = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1))), scale);
    } else if constexpr (TYPE == GGML_TYPE_Q4_K) {
        const BlockQ4_K * block = static_cast<const BlockQ4_K *>(row) + k / 256;
        const int group = static_cast<int>(k / 32 % 8);
        int scale_q = 0, min_q = 0;
        q4_k_scale_min(block->scales, group, scale_q, min_q);
        const __m512 scale = _mm512_set1_ps(_cvtsh_ss(block->scale) * static_cast<float>(scale_q));
        const __m512 min = _mm512_set1_ps(_cvtsh_ss(block->min_scale) * static_cast<float>(min_q));
        const auto * q = reinterpret_cast<const __m128i *>(block->nibbles + 32 * (group / 2));
        __m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(q)), hi = _mm512_cvtepu8_epi32(_mm_loadu_si128(q + 1));
        if (group % 2 == 0) {
            lo = _mm512_and_si512(lo, _mm512_set1_epi32(0xF));
            hi = _mm512_and_si512(hi, _mm512_set1_epi32(0xF));
        } else {
            lo = _mm512_srli_epi32(lo, 4);
            hi = _mm512_srli_epi32(hi, 4);
        }
        low = _mm512_fmsub_ps(_mm512_cvtepi32_ps(lo), scale, min);
        high = _mm512_fmsub_ps(_mm512_cvtepi32_ps(hi), scale, min);
    } else {
        static_assert(TYPE == GGML_TYPE_Q4_0, "no vector loader for this type");
        const BlockQ4_0 * block = static_cast<const BlockQ4_0 *>(row) + k / 32;
        const __m512 scale = _mm512_set1_ps(_cvtsh_ss(block->scale));
        const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(block->nibbles)));
        const __m512i eight = _mm512_set1_epi32(8);
        const __m512i lo = _mm512_sub_epi32(_mm512_and_si512(bytes, _mm512_set1_epi32(0xF)), eight);
        const __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(bytes, 4), eight);
        low = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), scale);
        high = _mm512_mul_ps(_mm512_cvtepi32_ps(hi), scale);
    }
}

}  // namespace gptj
