#include "gptj/kernels/gemm_avx512_bf16.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gptj/kernels/bf16_pack.h"
#include "gptj/kernels/isa.h"

#if defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#include <immintrin.h>

#include "gptj/memory.h"

#define GPTJ_TARGET_BF16 __attribute__((target("avx512f,avx512bf16")))

namespace gptj {
namespace {

// The blocking of gemm_avx512.cpp with pairs of k in place of single k: a micro-kernel keeps
// kRows x (16 * kVectors) outputs in 24 zmm registers; per pair of k it loads kVectors vectors
// of packed activations (16 tokens x 2 bf16 each) and broadcasts kRows weight pairs: 24
// vdpbf16ps (768 multiply-adds) for 10 loads. Weights are rounded to bf16 once per row block
// and k block, then reused by every token tile; k is cut into blocks whose slice of the packed
// activations stays in L2.
constexpr int kRows = 6;
constexpr int kVectors = 4;
constexpr int64_t kTileTokens = 16 * kVectors;
// Bytes of packed activations a k block may span (half a 1 MiB Zen 4 L2).
constexpr int64_t kPackedBlockBytes = 512 * 1024;

// Yt[r][n0 + j] (+)= sum over pairs p < n_pairs of w[r][p] . b[p][n0 + j] (two products each),
// for r < ROWS and j < 16 * VECTORS; yt points at Yt[row 0][n0], b at pair 0, token n0.
template <int ROWS, int VECTORS>
GPTJ_TARGET_BF16 void micro_kernel(const int32_t * w, int64_t w_stride, const int32_t * b, int64_t b_stride,
                                   int64_t n_pairs, float * yt, int64_t yt_stride, bool accumulate) {
    __m512 acc[ROWS][VECTORS];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            acc[r][v] = accumulate ? _mm512_loadu_ps(yt + r * yt_stride + 16 * v) : _mm512_setzero_ps();
        }
    }
    for (int64_t p = 0; p < n_pairs; ++p) {
        __m512bh x[VECTORS];
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) x[v] = (__m512bh)_mm512_loadu_si512(b + p * b_stride + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
            const __m512bh weight = (__m512bh)_mm512_set1_epi32(w[r * w_stride + p]);
#pragma GCC unroll 4
            for (int v = 0; v < VECTORS; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], weight, x[v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) _mm512_storeu_ps(yt + r * yt_stride + 16 * v, acc[r][v]);
    }
}

using MicroKernel = void (*)(const int32_t *, int64_t, const int32_t *, int64_t, int64_t, float *, int64_t, bool);

template <int ROWS>
MicroKernel pick_vectors(int vectors) {
    switch (vectors) {
        case 1: return micro_kernel<ROWS, 1>;
        case 2: return micro_kernel<ROWS, 2>;
        case 3: return micro_kernel<ROWS, 3>;
        default: return micro_kernel<ROWS, 4>;
    }
}

MicroKernel pick_kernel(int rows, int vectors) {
    static_assert(kRows == 6 && kVectors == 4, "the dispatch below covers 1..6 rows and 1..4 vectors");
    switch (rows) {
        case 1: return pick_vectors<1>(vectors);
        case 2: return pick_vectors<2>(vectors);
        case 3: return pick_vectors<3>(vectors);
        case 4: return pick_vectors<4>(vectors);
        case 5: return pick_vectors<5>(vectors);
        default: return pick_vectors<6>(vectors);
    }
}

}  // namespace

bool avx512_bf16_gemm_available() { return bf16_pairs_available() && isa_cap() >= IsaLevel::avx512bf16; }

void gemm_avx512_bf16_task(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * packed = dst->src[1];
    const int64_t k = w->ne[0], m = w->ne[1], n_pad = dst->ne[0];

    const int64_t row_blocks = (m + kRows - 1) / kRows;
    const int64_t first_row = row_blocks * ith / nth * kRows;
    const int64_t end_row = std::min(m, row_blocks * (ith + 1) / nth * kRows);
    if (first_row >= end_row) return;

    // Whole quantization blocks (256 weights covers every type's block size); row_to_bf16 takes
    // multiples of 32.
    const int64_t k_align = ggml_is_quantized(w->type) ? 256 : 32;
    int64_t k_block = kPackedBlockBytes / (n_pad * int64_t(sizeof(uint16_t)));
    k_block = std::min(k, std::max(k_align, k_block / k_align * k_align));
    thread_local std::vector<float> scratch;
    thread_local std::vector<uint16_t> weights;
    scratch.resize(static_cast<size_t>(k_block));
    weights.resize(static_cast<size_t>(kRows * k_block));

    const auto * w_data = static_cast<const char *>(w->data);
    const auto * b_data = static_cast<const int32_t *>(packed->data);  // one bf16 pair per int32
    auto * yt = static_cast<float *>(dst->data);

    for (int64_t k0 = 0; k0 < k; k0 += k_block) {
        const int64_t k_len = std::min(k_block, k - k0);
        for (int64_t row = first_row; row < end_row; row += kRows) {
            const int rows = static_cast<int>(std::min<int64_t>(kRows, end_row - row));
            for (int r = 0; r < rows; ++r) {
                row_to_bf16(w->type, w_data + (row + r) * w->nb[1], k0, k_len, scratch.data(),
                            weights.data() + r * k_len, nullptr);
            }
            const auto * w_pairs = reinterpret_cast<const int32_t *>(weights.data());
            for (int64_t n0 = 0; n0 < n_pad; n0 += kTileTokens) {
                const int vectors = static_cast<int>(std::min(kTileTokens, n_pad - n0) / 16);
                pick_kernel(rows, vectors)(w_pairs, k_len / 2, b_data + k0 / 2 * n_pad + n0, n_pad, k_len / 2,
                                           yt + row * n_pad + n0, n_pad, k0 > 0);
            }
        }
    }
    if (userdata != nullptr) reinterpret_cast<ReleasePages>(userdata)(w_data + first_row * w->nb[1], w_data + end_row * w->nb[1]);
}

}  // namespace gptj

#else

namespace gptj {
bool avx512_bf16_gemm_available() { return false; }
void gemm_avx512_bf16_task(ggml_tensor *, int, int, void *) {}  // never built into a graph without AVX512-BF16
}  // namespace gptj

#endif
