// Loading 32 weights of a row as four f32 vectors, inline, for our AVX2 kernels: the AVX2
// counterpart of weight_loads.h (whose block layouts it reads), for CPUs without AVX-512.
// Include only on x86-64 with GCC or Clang; functions using these are marked GPTJ_AVX2.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "ggml.h"
#include "gptj/kernels/avx2.h"
#include "gptj/kernels/weight_loads.h"

namespace gptj {

constexpr int kLanesAvx2 = 8;  // floats in an AVX2 register

namespace avx2 {

// A q8_0 block's 32 values as f32 in out[0..3], not yet times the block's scale (which a caller
// may rather apply once to something else, as the decode attention kernel does to its weights).
GPTJ_AVX2 __attribute__((always_inline)) inline void q8_0_values(const BlockQ8_0 & block, __m256 out[4]) {
    for (int i = 0; i < 4; ++i) {
        out[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(block.values + 8 * i))));
    }
}

// A q4_0 block's 32 values (its nibbles minus 8) as f32 in out[0..3], not yet times its scale.
GPTJ_AVX2 __attribute__((always_inline)) inline void q4_0_values(const BlockQ4_0 & block, __m256 out[4]) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(block.nibbles));
    const __m128i nibble = _mm_set1_epi8(0xF), eight = _mm_set1_epi8(8);
    // Weights 0-15 are the low nibbles, 16-31 the high ones; both minus 8, as signed bytes.
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(bytes, nibble), eight);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), nibble), eight);
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    out[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    out[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}

}  // namespace avx2

// Weights k .. k + 31 (k a multiple of 32) of a row of TYPE, as out[0..3] (8 weights each).
template <ggml_type TYPE>
GPTJ_AVX2 __attribute__((always_inline)) inline void load_32_weights_avx2(const void * row, int64_t k,
                                                                          __m256 out[4]) {
    if constexpr (TYPE == GGML_TYPE_F32) {
        const float * p = static_cast<const float *>(row) + k;
        for (int i = 0; i < 4; ++i) out[i] = _mm256_loadu_ps(p + 8 * i);
    } else if constexpr (TYPE == GGML_TYPE_F16) {
        const auto * p = reinterpret_cast<const __m128i *>(static_cast<const ggml_fp16_t *>(row) + k);
        for (int i = 0; i < 4; ++i) out[i] = _mm256_cvtph_ps(_mm_loadu_si128(p + i));
    } else if constexpr (TYPE == GGML_TYPE_BF16) {
        // bf16 is the top half of an f32: widen to 32 bits and shift into place.
        const auto * p = reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(row) + k);
        for (int i = 0; i < 4; ++i) {
            out[i] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p + i)), 16));
        }
    } else if constexpr (TYPE == GGML_TYPE_Q8_0 || TYPE == GGML_TYPE_Q4_0) {
        using Block = std::conditional_t<TYPE == GGML_TYPE_Q8_0, BlockQ8_0, BlockQ4_0>;
        const Block & block = static_cast<const Block *>(row)[k / 32];
        if constexpr (TYPE == GGML_TYPE_Q8_0) {
            avx2::q8_0_values(block, out);
        } else {
            avx2::q4_0_values(block, out);
        }
        const __m256 scale = _mm256_set1_ps(_cvtsh_ss(block.scale));
        for (int i = 0; i < 4; ++i) out[i] = _mm256_mul_ps(out[i], scale);
    } else {
        static_assert(TYPE == GGML_TYPE_Q4_K, "no AVX2 loader for this type");
        const BlockQ4_K * block = static_cast<const BlockQ4_K *>(row) + k / 256;
        const int group = static_cast<int>(k / 32 % 8);
        int scale_q = 0, min_q = 0;
        q4_k_scale_min(block->scales, group, scale_q, min_q);
        const __m256 scale = _mm256_set1_ps(_cvtsh_ss(block->scale) * static_cast<float>(scale_q));
        const __m256 min = _mm256_set1_ps(_cvtsh_ss(block->min_scale) * static_cast<float>(min_q));
        const auto * q = reinterpret_cast<const __m128i *>(block->nibbles + 32 * (group / 2));
        const __m128i nibble = _mm_set1_epi8(0xF);
        for (int half = 0; half < 2; ++half) {
            __m128i bytes = _mm_loadu_si128(q + half);
            bytes = _mm_and_si128(group % 2 == 0 ? bytes : _mm_srli_epi16(bytes, 4), nibble);
            const __m256 first = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
            const __m256 second = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)));
            out[2 * half] = _mm256_fmsub_ps(first, scale, min);
            out[2 * half + 1] = _mm256_fmsub_ps(second, scale, min);
        }
    }
}

}  // namespace gptj
