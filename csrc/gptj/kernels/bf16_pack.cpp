#include "gptj/kernels/bf16_pack.h"

#include "gptj/kernels/dequantize.h"
#include "gptj/kernels/isa.h"

// AVX512-BF16 intrinsics: GCC 11+, Clang 12+ (older compilers build without these kernels).
#if defined(__clang__)
#define GPTJ_COMPILER_HAS_BF16 (__clang_major__ >= 12)
#elif defined(__GNUC__)
#define GPTJ_COMPILER_HAS_BF16 (__GNUC__ >= 11)
#else
#define GPTJ_COMPILER_HAS_BF16 0
#endif

#if defined(__x86_64__) && GPTJ_COMPILER_HAS_BF16
#include <immintrin.h>

#include "gptj/kernels/weight_loads.h"

#define GPTJ_TARGET_BF16 __attribute__((target("avx512f,avx512bf16,f16c")))

namespace gptj {
namespace {

GPTJ_TARGET_BF16 void to_bf16(const float * src, int64_t n, uint16_t * dst) {
    for (int64_t i = 0; i < n; i += 16) {
        const __m256bh packed = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i), reinterpret_cast<const __m256i &>(packed));
    }
}

// hi = bf16(src), lo = bf16(src - hi): hi + lo holds an f16 weight exactly (11 significant
// bits) and an f32 activation to about 2^-17.
GPTJ_TARGET_BF16 void to_bf16_split(const float * src, int64_t n, uint16_t * hi, uint16_t * lo) {
    for (int64_t i = 0; i < n; i += 16) {
        const __m512 value = _mm512_loadu_ps(src + i);
        const __m256bh high = _mm512_cvtneps_pbh(value);
        const __m256i high_bits = reinterpret_cast<const __m256i &>(high);
        const __m512 high_value = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(high_bits), 16));
        const __m256bh low = _mm512_cvtneps_pbh(_mm512_sub_ps(value, high_value));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(hi + i), high_bits);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(lo + i), reinterpret_cast<const __m256i &>(low));
    }
}

GPTJ_TARGET_BF16 __m512 bf16_to_f32(__m256i bits) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// Weights k0 .. k0 + n (multiples of 32) of a row straight to bf16 (hi, and lo = the rest when
// lo is not null), with no f32 buffer in between.
template <ggml_type TYPE>
GPTJ_TARGET_BF16 void typed_row_to_bf16(const void * row, int64_t k0, int64_t n, uint16_t * hi, uint16_t * lo) {
    for (int64_t i = 0; i < n; i += 32) {
        __m512 a, b;
        load_32_weights<TYPE>(row, k0 + i, a, b);
        const __m512bh high = _mm512_cvtne2ps_pbh(b, a);
        const __m512i high_bits = reinterpret_cast<const __m512i &>(high);
        _mm512_storeu_si512(hi + i, high_bits);
        if (lo != nullptr) {
            const __m512 a_rest = _mm512_sub_ps(a, bf16_to_f32(_mm512_castsi512_si256(high_bits)));
            const __m512 b_rest = _mm512_sub_ps(b, bf16_to_f32(_mm512_extracti64x4_epi64(high_bits, 1)));
            const __m512bh low = _mm512_cvtne2ps_pbh(b_rest, a_rest);
            _mm512_storeu_si512(lo + i, reinterpret_cast<const __m512i &>(low));
        }
    }
}

}  // namespace

bool bf16_pairs_available() {
    static const bool available = cpu_has_avx512f() && __builtin_cpu_supports("avx512bf16");
    return available;
}

// Any type: through f32 (ggml's dequantizers for the types without a vector loader).
GPTJ_TARGET_BF16 void row_to_bf16(ggml_type type, const void * row, int64_t k0, int64_t n, float * scratch, uint16_t * hi,
                                  uint16_t * lo) {
    switch (type) {
        case GGML_TYPE_F16: return typed_row_to_bf16<GGML_TYPE_F16>(row, k0, n, hi, lo);
        case GGML_TYPE_BF16: return typed_row_to_bf16<GGML_TYPE_BF16>(row, k0, n, hi, lo);
        case GGML_TYPE_Q8_0: return typed_row_to_bf16<GGML_TYPE_Q8_0>(row, k0, n, hi, lo);
        case GGML_TYPE_Q4_0: return typed_row_to_bf16<GGML_TYPE_Q4_0>(row, k0, n, hi, lo);
        case GGML_TYPE_Q4_K: return typed_row_to_bf16<GGML_TYPE_Q4_K>(row, k0, n, hi, lo);
        default:
            row_to_f32(type, row, k0, n, scratch);
            if (lo != nullptr) {
                to_bf16_split(scratch, n, hi, lo);
            } else {
                to_bf16(scratch, n, hi);
            }
    }
}

namespace {

GPTJ_TARGET_BF16 void pack_bf16_pairs_task(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const int64_t n_tokens = x->ne[1], n_pad = dst->ne[0] / 2, pairs = x->ne[0] / 2;
    const bool split = dst->ne[1] == 2 * pairs;  // a second half of rows: the residuals
    auto * out = static_cast<int *>(dst->data);  // one bf16 pair per int
    // 16 pairs (32 activations) of one token at a time, scattered down 16 packed rows.
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(static_cast<int>(n_pad)));
    const int64_t groups = pairs / 16;
    for (int64_t g = groups * ith / nth; g < groups * (ith + 1) / nth; ++g) {
        for (int64_t n = 0; n < n_pad; ++n) {
            __m512i high = _mm512_setzero_si512(), low = _mm512_setzero_si512();
            if (n < n_tokens) {
                const float * src = reinterpret_cast<const float *>(static_cast<const char *>(x->data) + n * x->nb[1]) + 32 * g;
                const __m512 a = _mm512_loadu_ps(src), b = _mm512_loadu_ps(src + 16);
                const __m512bh both = _mm512_cvtne2ps_pbh(b, a);
                high = reinterpret_cast<const __m512i &>(both);
                if (split) {
                    const __m512 a_high = bf16_to_f32(_mm512_castsi512_si256(high));
                    const __m512 b_high = bf16_to_f32(_mm512_extracti64x4_epi64(high, 1));
                    const __m512bh rest = _mm512_cvtne2ps_pbh(_mm512_sub_ps(b, b_high), _mm512_sub_ps(a, a_high));
                    low = reinterpret_cast<const __m512i &>(rest);
                }
            }
            _mm512_i32scatter_epi32(out + 16 * g * n_pad + n, rows, high, 4);
            if (split) _mm512_i32scatter_epi32(out + (pairs + 16 * g) * n_pad + n, rows, low, 4);
        }
    }
}

}  // namespace

ggml_tensor * pack_bf16_pairs(ggml_context * ctx, ggml_tensor * x, bool split) {
    const int64_t k = x->ne[0], n_pad = (x->ne[1] + 15) / 16 * 16;
    ggml_tensor * args[] = {x};
    return ggml_custom_4d(ctx, GGML_TYPE_BF16, 2 * n_pad, split ? k : k / 2, 1, 1, args, 1, pack_bf16_pairs_task,
                          GGML_N_TASKS_MAX, nullptr);
}

}  // namespace gptj

#else

namespace gptj {
bool bf16_pairs_available() { return false; }
void row_to_bf16(ggml_type, const void *, int64_t, int64_t, float *, uint16_t *, uint16_t *) {}
ggml_tensor * pack_bf16_pairs(ggml_context *, ggml_tensor *, bool) { return nullptr; }
}  // namespace gptj

#endif
