// What our AVX2 kernels share: the target attribute their functions carry and horizontal sums.
// Include only on x86-64 with GCC or Clang.
#pragma once

// AVX2 with FMA and F16C (one feature set on every CPU that has AVX2 since 2013), called only
// after cpu_has_avx2() (isa.h).
#define GPTJ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GPTJ_AVX2_INLINE GPTJ_AVX2 __attribute__((always_inline)) inline

#include <immintrin.h>

namespace gptj::avx2 {

GPTJ_AVX2_INLINE float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

GPTJ_AVX2_INLINE int horizontal_sum(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

}  // namespace gptj::avx2
