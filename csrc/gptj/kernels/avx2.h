// What our AVX2 kernels share: the target attribute their functions carry, horizontal sums, and
// the rounding of activations to 8 bits.
// Include only on x86-64 with GCC or Clang.
#pragma once

// AVX2 with FMA and F16C (one feature set on every CPU that has AVX2 since 2013), called only
// after cpu_has_avx2() (isa.h).
#define GPTJ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GPTJ_AVX2_INLINE GPTJ_AVX2 __attribute__((always_inline)) inline
// AVX2 with AVX-VNNI, called only after cpu_has_avx_vnni() (isa.h).
#define GPTJ_AVX_VNNI __attribute__((target("avx2,fma,f16c,avxvnni")))

#include <immintrin.h>

#include <cmath>
#include <cstdint>

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

// 32 floats times `inverse`, rounded to the nearest integers (|x * inverse| <= 127), stored as
// bytes in order; returns their sum.
GPTJ_AVX2_INLINE int round_32(const float * x, __m256 inverse, int8_t * out) {
    __m256i q[4];
    for (int j = 0; j < 4; ++j) q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), inverse));
    // The packs work within 128-bit lanes: dwords come out as q0 q1 q2 q3 (low halves), then the
    // high halves; the permutation puts each q's halves back together.
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out),
                        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    return horizontal_sum(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
}

// max |x| over n floats (n a multiple of 32); NaN if any is NaN, so that a NaN activation gives
// NaN outputs (checked after the step) instead of integers that look like numbers.
GPTJ_AVX2_INLINE float max_magnitude(const float * x, int64_t n) {
    const __m256 magnitude_bits = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 amax = _mm256_setzero_ps(), unordered = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        amax = _mm256_max_ps(amax, _mm256_and_ps(v, magnitude_bits));
        unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(unordered) != 0) return NAN;
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

}  // namespace gptj::avx2
