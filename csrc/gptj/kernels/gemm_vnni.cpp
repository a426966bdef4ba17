#include "gptj/kernels/gemm_vnni.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "gptj/kernels/int8_gemm_loop.h"
#include "gptj/kernels/matvec_int8.h"
#include "gptj/kernels/quant_blocks.h"
#include "gptj/memory.h"

namespace gptj {
namespace {

std::atomic<bool> g_enabled{true};

}  // namespace

void set_vnni_gemm_enabled(bool enabled) { g_enabled = enabled; }

bool vnni_gemm_available() { return g_enabled && cpu_has_avx512vnni(); }

bool vnni_gemm_applies(const ggml_tensor * weights, bool in_plain_memory) {
    const ggml_type t = weights->type;
    const int64_t multiple = t == GGML_TYPE_Q4_K ? 256 : 32;
    return (t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q4_K) && in_plain_memory &&
           ggml_is_contiguous(weights) && weights->ne[0] % multiple == 0 && vnni_gemm_available();
}

}  // namespace gptj

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define GPTJ_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,f16c,fma")))

namespace gptj {
namespace {

// A micro-kernel keeps ROWS x (16 * VECTORS) outputs: per block of 32 weights an int32
// accumulator each (8 vpdpbusd: 4 weights per lane), then, scaled, a float sum each, 2 * 12 zmm
// registers for 4 x 48. Per 4 weights it loads VECTORS vectors of activations and broadcasts ROWS
// weight quads: 12 vpdpbusd (768 multiply-adds) for 7 loads.
constexpr int kRows = 4;
constexpr int kVectors = 3;
constexpr int64_t kTileTokens = 16 * kVectors;
// Bytes of packed activations a k block may span (half a 1 MiB Zen 4 L2).
constexpr int64_t kPackedBlockBytes = 512 * 1024;

// A block of rows unpacked for the micro-kernel: per row, k_len signed bytes, and per block of 32
// the weights' scale, -128 times their sum (the accumulator's start) and, for q4_K, the block's
// minimum (weight = scale * value - minimum).
struct UnpackedRows {
    std::vector<int8_t> values;
    std::vector<float> scales;
    std::vector<int32_t> starts;
    std::vector<float> mins;
};

// Sum of 32 signed bytes.
GPTJ_VNNI inline int32_t byte_sum(__m256i v) {
    const __m256i biased = _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80)));  // v + 128 as u8
    const __m256i sums = _mm256_sad_epu8(biased, _mm256_setzero_si256());
    const __m128i half = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    return static_cast<int32_t>(_mm_cvtsi128_si64(half) + _mm_extract_epi64(half, 1)) - 32 * 128;
}

// Row `row` of w, weights k0 .. k0 + n (whole blocks), into slot r of `out` (k_len bytes each).
GPTJ_VNNI void unpack_row(const ggml_tensor * w, int64_t row, int64_t k0, int64_t n, int r, int64_t k_len,
                          UnpackedRows & out) {
    const char * data = static_cast<const char *>(w->data) + row * w->nb[1];
    int8_t * values = out.values.data() + r * k_len;
    float * scales = out.scales.data() + r * (k_len / 32);
    int32_t * starts = out.starts.data() + r * (k_len / 32);
    if (w->type == GGML_TYPE_Q4_K) {
        // Group g of a super-block: the low (g even) or high nibbles of bytes 32 (g / 2) ..; its
        // 6-bit scale and minimum times the super-block's f16 ones.
        float * mins = out.mins.data() + r * (k_len / 32);
        const __m256i low_nibbles = _mm256_set1_epi8(0x0F);
        for (int64_t sb = 0; sb < n / 256; ++sb) {
            const auto * block = reinterpret_cast<const BlockQ4_K *>(data) + k0 / 256 + sb;
            q4_k_group_scales(*block, scales + sb * 8, mins + sb * 8);
            for (int g = 0; g < 8; ++g) {
                const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(block->nibbles + 32 * (g / 2)));
                const __m256i v = _mm256_and_si256(g % 2 == 0 ? packed : _mm256_srli_epi16(packed, 4), low_nibbles);
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(values + 32 * (sb * 8 + g)), v);
                starts[sb * 8 + g] = -128 * byte_sum(v);
            }
        }
        return;
    }
    for (int64_t b = 0; b < n / 32; ++b) {
        __m256i v;
        if (w->type == GGML_TYPE_Q8_0) {
            const auto * block = reinterpret_cast<const BlockQ8_0 *>(data) + k0 / 32 + b;
            v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(block->values));
            scales[b] = _cvtsh_ss(block->scale);
        } else {
            // Weights 0-15 are the low nibbles of bytes 0-15, 16-31 the high ones; minus 8.
            const auto * block = reinterpret_cast<const BlockQ4_0 *>(data) + k0 / 32 + b;
            const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i *>(block->nibbles));
            const __m128i low_nibbles = _mm_set1_epi8(0x0F);
            const __m256i nibbles = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), low_nibbles),
                                                     _mm_and_si128(packed, low_nibbles));
            v = _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8));
            scales[b] = _cvtsh_ss(block->scale);
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(values + 32 * b), v);
        starts[b] = -128 * byte_sum(v);
    }
}

// Yt[r][n0 + j] (+)= sum over blocks of w_scale[r][b] * x_scale[b][n0 + j] * (integer dot of the
// block), for r < ROWS and j < 16 * VECTORS; yt points at Yt[row 0][n0], quads at quad row 0 of
// the k block, token n0, x_scales at its block 0, token n0 (and x_sums, the scales times the
// blocks' sums of q, as far beyond as the scales are beyond the quads' end). MINS (q4_K): minus
// each block's minimum times the activations' block sum.
template <bool MINS, int ROWS, int VECTORS>
GPTJ_VNNI void micro_kernel(const UnpackedRows & w, int64_t k_len, const int32_t * quads, const float * x_scales,
                            const float * x_sums, int64_t n_pad, float * yt, int64_t yt_stride, bool accumulate) {
    const int64_t blocks = k_len / 32;
    __m512 acc[ROWS][VECTORS];
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            acc[r][v] = accumulate ? _mm512_loadu_ps(yt + r * yt_stride + 16 * v) : _mm512_setzero_ps();
        }
    }
    for (int64_t b = 0; b < blocks; ++b) {
        __m512i dot[ROWS][VECTORS];
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
            const __m512i start = _mm512_set1_epi32(w.starts[r * blocks + b]);
#pragma GCC unroll 4
            for (int v = 0; v < VECTORS; ++v) dot[r][v] = start;
        }
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            __m512i x[VECTORS];
#pragma GCC unroll 4
            for (int v = 0; v < VECTORS; ++v) x[v] = _mm512_loadu_si512(quads + (b * 8 + q) * n_pad + 16 * v);
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                int32_t four;
                std::memcpy(&four, w.values.data() + r * k_len + b * 32 + 4 * q, sizeof four);
                const __m512i weights = _mm512_set1_epi32(four);
#pragma GCC unroll 4
                for (int v = 0; v < VECTORS; ++v) dot[r][v] = _mm512_dpbusd_epi32(dot[r][v], x[v], weights);
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            const __m512 xs = _mm512_loadu_ps(x_scales + b * n_pad + 16 * v);
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(w.scales[r * blocks + b]), xs);
                acc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][v]), scale, acc[r][v]);
            }
            if constexpr (MINS) {
                const __m512 sums = _mm512_loadu_ps(x_sums + b * n_pad + 16 * v);
#pragma GCC unroll 4
                for (int r = 0; r < ROWS; ++r) {
                    acc[r][v] = _mm512_fnmadd_ps(_mm512_set1_ps(w.mins[r * blocks + b]), sums, acc[r][v]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) _mm512_storeu_ps(yt + r * yt_stride + 16 * v, acc[r][v]);
    }
}

using MicroKernel = void (*)(const UnpackedRows &, int64_t, const int32_t *, const float *, const float *, int64_t,
                             float *, int64_t, bool);

// The micro-kernels for 1..kRows rows and 1..kVectors vectors of tokens.
template <bool MINS, int ROWS, int... V>
constexpr std::array<MicroKernel, kVectors> by_vectors(std::integer_sequence<int, V...>) {
    return {micro_kernel<MINS, ROWS, V + 1>...};
}
template <bool MINS, int... R>
constexpr std::array<std::array<MicroKernel, kVectors>, kRows> by_rows(std::integer_sequence<int, R...>) {
    return {by_vectors<MINS, R + 1>(std::make_integer_sequence<int, kVectors>())...};
}
constexpr auto kMicroKernels = by_rows<false>(std::make_integer_sequence<int, kRows>());
constexpr auto kMicroKernelsWithMins = by_rows<true>(std::make_integer_sequence<int, kRows>());

MicroKernel pick_kernel(bool mins, int rows, int vectors) {
    return (mins ? kMicroKernelsWithMins : kMicroKernels)[rows - 1][vectors - 1];
}

// Rounds each token's activations per block of 32 (symmetric, to nearest, as q8_0 does) into the
// packed layout (int8_gemm_loop.h) for n_pad tokens, a multiple of 16: values as u8 = q + 128
// (vpdpbusd multiplies u8 by s8; the weights are the s8 side, and each row block's accumulator
// starts at -128 times the weights' sum, so it ends at sum(w q) exactly); past the last token 128
// (q = 0), with scale 0. Thread ith of nth takes a range of blocks for every token. A block holding a NaN
// gets a NaN scale, so that the outputs it meets are NaN (checked after the step), not numbers.
GPTJ_VNNI void pack_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], n_tokens = x->ne[1], n_pad = vnni_padded_tokens(n_tokens), blocks = k / 32;
    auto * quads = static_cast<int32_t *>(dst->data);
    auto * scales = reinterpret_cast<float *>(static_cast<char *>(dst->data) + k * n_pad);
    float * sums = scales + blocks * n_pad;
    for (int64_t b = blocks * ith / nth; b < blocks * (ith + 1) / nth; ++b) {
        for (int64_t t = 0; t < n_pad; ++t) {
            if (t >= n_tokens) {
                for (int q = 0; q < 8; ++q) quads[(b * 8 + q) * n_pad + t] = static_cast<int32_t>(0x80808080u);
                scales[b * n_pad + t] = sums[b * n_pad + t] = 0.0f;
                continue;
            }
            const float * xb = reinterpret_cast<const float *>(static_cast<const char *>(x->data) + t * x->nb[1]) + b * 32;
            const __m512 lo = _mm512_loadu_ps(xb), hi = _mm512_loadu_ps(xb + 16);
            const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
            const bool nan = _mm512_cmp_ps_mask(lo, lo, _CMP_UNORD_Q) != 0 || _mm512_cmp_ps_mask(hi, hi, _CMP_UNORD_Q) != 0;
            const float scale = nan ? NAN : amax / 127.0f;
            const __m512 inverse = _mm512_set1_ps(amax > 0.0f && !nan ? 127.0f / amax : 0.0f);
            const __m512i bias = _mm512_set1_epi32(128);
            const __m512i rounded_lo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, inverse));
            const __m512i rounded_hi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, inverse));
            const __m128i q_lo = _mm512_cvtepi32_epi8(_mm512_add_epi32(rounded_lo, bias));
            const __m128i q_hi = _mm512_cvtepi32_epi8(_mm512_add_epi32(rounded_hi, bias));
            // NaN rounds to INT_MIN; its sum is not used (the NaN scale wins).
            const int sum = nan ? 0 : _mm512_reduce_add_epi32(_mm512_add_epi32(rounded_lo, rounded_hi));
            alignas(16) int32_t four[8];
            _mm_store_si128(reinterpret_cast<__m128i *>(four), q_lo);
            _mm_store_si128(reinterpret_cast<__m128i *>(four + 4), q_hi);
            for (int q = 0; q < 8; ++q) quads[(b * 8 + q) * n_pad + t] = four[q];
            scales[b * n_pad + t] = scale;
            sums[b * n_pad + t] = scale * static_cast<float>(sum);
        }
    }
}

}  // namespace

ggml_tensor * pack_vnni_activations(ggml_context * ctx, ggml_tensor * x) {
    ggml_tensor * args[] = {x};
    return ggml_custom_4d(ctx, GGML_TYPE_I8, int8_packed_bytes(x->ne[0], vnni_padded_tokens(x->ne[1])), 1, 1, 1, args, 1,
                          pack_task, GGML_N_TASKS_MAX, nullptr);
}

void vnni_gemm_task(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = dst->src[0];
    const bool mins = w->type == GGML_TYPE_Q4_K;
    const int64_t n_pad = dst->ne[0];
    thread_local UnpackedRows rows;
    auto unpack = [&](int64_t row, int64_t k0, int64_t k_len, int slot) {
        const auto size = static_cast<size_t>(kRows * k_len);
        if (rows.values.size() != size) {
            rows.values.resize(size);
            rows.scales.resize(size / 32);
            rows.starts.resize(size / 32);
            rows.mins.resize(size / 32);
        }
        unpack_row(w, row, k0, k_len, slot, k_len, rows);
    };
    auto multiply = [&](int n_rows, int vectors, int64_t k_len, const int32_t * quads, const float * scales,
                        const float * sums, float * yt, bool accumulate) {
        pick_kernel(mins, n_rows, vectors)(rows, k_len, quads, scales, sums, n_pad, yt, n_pad, accumulate);
    };
    run_int8_gemm(dst, ith, nth, userdata, {kRows, kTileTokens, 16, kPackedBlockBytes}, unpack, multiply);
}

}  // namespace gptj

#else

namespace gptj {
ggml_tensor * pack_vnni_activations(ggml_context *, ggml_tensor * x) { return x; }  // never called: applies() is false
void vnni_gemm_task(ggml_tensor *, int, int, void *) {}
}  // namespace gptj

#endif
