#include "gptj/kernels/gemm_int8_avx2.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "gptj/kernels/dequantize.h"
#include "gptj/kernels/int8_gemm_loop.h"
#include "gptj/kernels/isa.h"
#include "gptj/kernels/quant_blocks.h"
#include "gptj/memory.h"

namespace gptj {
namespace {

std::atomic<bool> g_enabled{true};
std::atomic<bool> g_avx_vnni_enabled{true};

}  // namespace

void set_int8_gemm_avx2_enabled(bool enabled) { g_enabled = enabled; }
void set_int8_gemm_avx_vnni_enabled(bool enabled) { g_avx_vnni_enabled = enabled; }
bool int8_gemm_avx_vnni_available() { return g_avx_vnni_enabled && cpu_has_avx_vnni(); }

bool int8_gemm_avx2_available() { return g_enabled && cpu_has_avx2() && !cpu_has_avx512f(); }

bool int8_gemm_avx2_applies(const ggml_tensor * weights, bool in_plain_memory) {
    const ggml_type t = weights->type;
    const int64_t multiple = t == GGML_TYPE_Q4_K ? 256 : 32;
    // q8_0 only with AVX-VNNI: its weights, made unsigned (w + 128, up to 255), would saturate
    // vpmaddubsw's int16 pairs (2 x 255 x 127); vpdpbusd sums into int32.
    const bool type = t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q4_K || (t == GGML_TYPE_Q8_0 && int8_gemm_avx_vnni_available());
    return type && in_plain_memory && ggml_is_contiguous(weights) && weights->ne[0] % multiple == 0 &&
           int8_gemm_avx2_available();
}

}  // namespace gptj

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "gptj/kernels/avx2.h"

namespace gptj {
namespace {

// A micro-kernel keeps ROWS x (8 * VECTORS) outputs: per block of 32 weights an int16 pair
// accumulator each (8 vpmaddubsw + vpaddw), then, widened and scaled, a float sum each: 2 x 6 of
// the 16 ymm registers for 3 rows x 16 tokens. Per 4 weights it loads VECTORS vectors of
// activations and broadcasts ROWS weight quads. 8-layer 6B-shaped q4_0, 2 threads, pp128 / pp512
// against 2 x 3: 3 x 2 1.07x / 1.11x, 2 x 2 0.97x / 0.95x, 1 x 4 0.95x / 0.97x, 4 x 1 0.85x / 0.88x.
constexpr int kRows = 3;
constexpr int kVectors = 2;
constexpr int64_t kTileTokens = 8 * kVectors;
// Bytes of packed activations a k block may span (a quarter of a laptop's 1-2 MiB L2).
constexpr int64_t kPackedBlockBytes = 256 * 1024;

// A block of rows unpacked for the micro-kernel: per row, k_len unsigned weights (one per byte: a
// nibble, or q8_0's value + 128), and per block of 32 its scale and offset (weight = scale * byte -
// offset).
struct UnpackedRows {
    std::vector<uint8_t> nibbles;
    std::vector<float> scales;
    std::vector<float> offsets;
};

// Row `row` of w, weights k0 .. k0 + n (whole blocks), into slot r of `out` (k_len bytes each).
GPTJ_AVX2 void unpack_row(const ggml_tensor * w, int64_t row, int64_t k0, int64_t n, int r, int64_t k_len,
                          UnpackedRows & out) {
    const char * data = static_cast<const char *>(w->data) + row * w->nb[1];
    uint8_t * nibbles = out.nibbles.data() + r * k_len;
    float * scales = out.scales.data() + r * (k_len / 32);
    float * offsets = out.offsets.data() + r * (k_len / 32);
    const __m256i low_nibbles = _mm256_set1_epi8(0x0F);
    if (w->type == GGML_TYPE_Q4_K) {
        // Group g of a super-block: the low (g even) or high nibbles of bytes 32 (g / 2) ..; its
        // 6-bit scale and minimum times the super-block's f16 ones.
        for (int64_t sb = 0; sb < n / 256; ++sb) {
            const auto * block = reinterpret_cast<const BlockQ4_K *>(data) + k0 / 256 + sb;
            q4_k_group_scales(*block, scales + sb * 8, offsets + sb * 8);
            for (int g = 0; g < 8; ++g) {
                const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(block->nibbles + 32 * (g / 2)));
                const __m256i v = _mm256_and_si256(g % 2 == 0 ? packed : _mm256_srli_epi16(packed, 4), low_nibbles);
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(nibbles + 32 * (sb * 8 + g)), v);
            }
        }
        return;
    }
    if (w->type == GGML_TYPE_Q8_0) {
        // Signed bytes made unsigned (w + 128, flipping the sign bit), 128 x the scale taken off
        // through the activations' block sums.
        for (int64_t b = 0; b < n / 32; ++b) {
            const auto * block = reinterpret_cast<const BlockQ8_0 *>(data) + k0 / 32 + b;
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(block->values));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(nibbles + 32 * b), _mm256_xor_si256(v, _mm256_set1_epi8(-128)));
            scales[b] = _cvtsh_ss(block->scale);
            offsets[b] = 128.0f * scales[b];
        }
        return;
    }
    // q4_0: weights 0-15 are the low nibbles of bytes 0-15, 16-31 the high ones; minus 8.
    for (int64_t b = 0; b < n / 32; ++b) {
        const auto * block = reinterpret_cast<const BlockQ4_0 *>(data) + k0 / 32 + b;
        const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i *>(block->nibbles));
        const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(nibbles + 32 * b), _mm256_and_si256(both, low_nibbles));
        scales[b] = _cvtsh_ss(block->scale);
        offsets[b] = 8.0f * scales[b];
    }
}

// Yt[r][n0 + j] (+)= sum over blocks of scale[r][b] * x_scale[b][j] * (integer dot of the block)
// - offset[r][b] * x_sum[b][j], for r < ROWS and j < 8 * VECTORS; yt points at Yt[row 0][n0],
// quads at quad row 0 of the k block, token n0, x_scales and x_sums at its block 0, token n0.
template <int ROWS, int VECTORS>
GPTJ_AVX2 void micro_kernel(const UnpackedRows & w, int64_t k_len, const int32_t * quads, const float * x_scales,
                            const float * x_sums, int64_t n_pad, float * yt, int64_t yt_stride, bool accumulate) {
    const int64_t blocks = k_len / 32;
    __m256 acc[ROWS][VECTORS];
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            acc[r][v] = accumulate ? _mm256_loadu_ps(yt + r * yt_stride + 8 * v) : _mm256_setzero_ps();
        }
    }
    for (int64_t b = 0; b < blocks; ++b) {
        __m256i pairs[ROWS][VECTORS];
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
            for (int v = 0; v < VECTORS; ++v) pairs[r][v] = _mm256_setzero_si256();
        }
        // Not unrolled: unrolled, GCC reassociates the vpaddw chains into trees whose partial
        // products spill (80 ymm stack accesses at 2 x 3).
#pragma GCC unroll 1
        for (int q = 0; q < 8; ++q) {
            __m256i x[VECTORS];
#pragma GCC unroll 4
            for (int v = 0; v < VECTORS; ++v) {
                x[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(quads + (b * 8 + q) * n_pad + 8 * v));
            }
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                int32_t four;
                std::memcpy(&four, w.nibbles.data() + r * k_len + b * 32 + 4 * q, sizeof four);
                const __m256i weights = _mm256_set1_epi32(four);
#pragma GCC unroll 4
                for (int v = 0; v < VECTORS; ++v) {
                    pairs[r][v] = _mm256_add_epi16(pairs[r][v], _mm256_maddubs_epi16(weights, x[v]));
                }
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            const __m256 xs = _mm256_loadu_ps(x_scales + b * n_pad + 8 * v);
            const __m256 sums = _mm256_loadu_ps(x_sums + b * n_pad + 8 * v);
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                const __m256i dot = _mm256_madd_epi16(pairs[r][v], _mm256_set1_epi16(1));
                const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(w.scales[r * blocks + b]), xs);
                acc[r][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[r][v]);
                acc[r][v] = _mm256_fnmadd_ps(_mm256_set1_ps(w.offsets[r * blocks + b]), sums, acc[r][v]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) _mm256_storeu_ps(yt + r * yt_stride + 8 * v, acc[r][v]);
    }
}

// micro_kernel with AVX-VNNI: each quad's products summed straight into int32 by vpdpbusd (the
// nibbles as its unsigned operand), so no int16 pairs and no widening per block.
template <int ROWS, int VECTORS>
GPTJ_AVX_VNNI void micro_kernel_vnni(const UnpackedRows & w, int64_t k_len, const int32_t * quads, const float * x_scales,
                                     const float * x_sums, int64_t n_pad, float * yt, int64_t yt_stride, bool accumulate) {
    const int64_t blocks = k_len / 32;
    __m256 acc[ROWS][VECTORS];
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            acc[r][v] = accumulate ? _mm256_loadu_ps(yt + r * yt_stride + 8 * v) : _mm256_setzero_ps();
        }
    }
    for (int64_t b = 0; b < blocks; ++b) {
        __m256i dots[ROWS][VECTORS];
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
            for (int v = 0; v < VECTORS; ++v) dots[r][v] = _mm256_setzero_si256();
        }
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            __m256i x[VECTORS];
#pragma GCC unroll 4
            for (int v = 0; v < VECTORS; ++v) {
                x[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(quads + (b * 8 + q) * n_pad + 8 * v));
            }
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                int32_t four;
                std::memcpy(&four, w.nibbles.data() + r * k_len + b * 32 + 4 * q, sizeof four);
                const __m256i weights = _mm256_set1_epi32(four);
#pragma GCC unroll 4
                for (int v = 0; v < VECTORS; ++v) dots[r][v] = _mm256_dpbusd_avx_epi32(dots[r][v], weights, x[v]);
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            const __m256 xs = _mm256_loadu_ps(x_scales + b * n_pad + 8 * v);
            const __m256 sums = _mm256_loadu_ps(x_sums + b * n_pad + 8 * v);
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(w.scales[r * blocks + b]), xs);
                acc[r][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots[r][v]), scale, acc[r][v]);
                acc[r][v] = _mm256_fnmadd_ps(_mm256_set1_ps(w.offsets[r * blocks + b]), sums, acc[r][v]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) _mm256_storeu_ps(yt + r * yt_stride + 8 * v, acc[r][v]);
    }
}

using MicroKernel = void (*)(const UnpackedRows &, int64_t, const int32_t *, const float *, const float *, int64_t,
                             float *, int64_t, bool);

// The micro-kernels for 1..kRows rows and 1..kVectors vectors of tokens, without and with AVX-VNNI.
template <bool VNNI, int ROWS, int... V>
constexpr std::array<MicroKernel, kVectors> by_vectors(std::integer_sequence<int, V...>) {
    if constexpr (VNNI) {
        return {micro_kernel_vnni<ROWS, V + 1>...};
    } else {
        return {micro_kernel<ROWS, V + 1>...};
    }
}
template <bool VNNI, int... R>
constexpr std::array<std::array<MicroKernel, kVectors>, kRows> by_rows(std::integer_sequence<int, R...>) {
    return {by_vectors<VNNI, R + 1>(std::make_integer_sequence<int, kVectors>())...};
}
constexpr auto kMicroKernels = by_rows<false>(std::make_integer_sequence<int, kRows>());
constexpr auto kMicroKernelsVnni = by_rows<true>(std::make_integer_sequence<int, kRows>());

// Rounds each token's activations per block of 32 (symmetric, to nearest, as q8_0 does) into the
// packed layout (int8_gemm_loop.h) for n_pad tokens, a multiple of 8: values as s8; past the last
// token 0, with scale 0. Thread ith of nth takes a range of blocks for every token. A block holding a NaN
// gets a NaN scale, so that the outputs it meets are NaN (checked after the step), not numbers.
GPTJ_AVX2 void pack_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], n_tokens = x->ne[1], n_pad = int8_avx2_padded_tokens(n_tokens), blocks = k / 32;
    auto * quads = static_cast<int32_t *>(dst->data);
    auto * scales = reinterpret_cast<float *>(static_cast<char *>(dst->data) + k * n_pad);
    float * sums = scales + blocks * n_pad;
    for (int64_t b = blocks * ith / nth; b < blocks * (ith + 1) / nth; ++b) {
        for (int64_t t = 0; t < n_pad; ++t) {
            if (t >= n_tokens) {
                for (int q = 0; q < 8; ++q) quads[(b * 8 + q) * n_pad + t] = 0;
                scales[b * n_pad + t] = sums[b * n_pad + t] = 0.0f;
                continue;
            }
            const float * xb = reinterpret_cast<const float *>(static_cast<const char *>(x->data) + t * x->nb[1]) + b * 32;
            const float amax = avx2::max_magnitude(xb, 32);
            const bool nan = std::isnan(amax);
            const __m256 inverse = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);  // NaN > 0 is false
            alignas(32) int32_t four[8];
            const int sum = avx2::round_32(xb, inverse, reinterpret_cast<int8_t *>(four));
            for (int j = 0; j < 8; ++j) quads[(b * 8 + j) * n_pad + t] = four[j];
            const float scale = nan ? NAN : amax / 127.0f;
            scales[b * n_pad + t] = scale;
            sums[b * n_pad + t] = scale * static_cast<float>(sum);
        }
    }
}

}  // namespace

ggml_tensor * pack_int8_avx2_activations(ggml_context * ctx, ggml_tensor * x) {
    ggml_tensor * args[] = {x};
    return ggml_custom_4d(ctx, GGML_TYPE_I8, int8_packed_bytes(x->ne[0], int8_avx2_padded_tokens(x->ne[1])), 1, 1, 1, args,
                          1, pack_task, GGML_N_TASKS_MAX, nullptr);
}

void int8_gemm_avx2_task(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = dst->src[0];
    const int64_t n_pad = dst->ne[0];
    thread_local UnpackedRows rows;
    // q8_0 takes this kernel only with AVX-VNNI (int8_gemm_avx2_applies), whatever the switch says now.
    const auto & kernels = int8_gemm_avx_vnni_available() || w->type == GGML_TYPE_Q8_0 ? kMicroKernelsVnni : kMicroKernels;
    auto unpack = [&](int64_t row, int64_t k0, int64_t k_len, int slot) {
        const auto size = static_cast<size_t>(kRows * k_len);
        if (rows.nibbles.size() != size) {
            rows.nibbles.resize(size);
            rows.scales.resize(size / 32);
            rows.offsets.resize(size / 32);
        }
        unpack_row(w, row, k0, k_len, slot, k_len, rows);
    };
    auto multiply = [&](int n_rows, int vectors, int64_t k_len, const int32_t * quads, const float * scales,
                        const float * sums, float * yt, bool accumulate) {
        kernels[n_rows - 1][vectors - 1](rows, k_len, quads, scales, sums, n_pad, yt, n_pad, accumulate);
    };
    run_int8_gemm(dst, ith, nth, userdata, {kRows, kTileTokens, 8, kPackedBlockBytes}, unpack, multiply);
}

}  // namespace gptj

#else

namespace gptj {
ggml_tensor * pack_int8_avx2_activations(ggml_context *, ggml_tensor * x) { return x; }  // never called: applies() is false
void int8_gemm_avx2_task(ggml_tensor *, int, int, void *) {}
}  // namespace gptj

#endif
