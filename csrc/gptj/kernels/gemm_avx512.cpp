#include "gptj/kernels/gemm_avx512.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gptj/kernels/dequantize.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "gptj/memory.h"

namespace gptj {
namespace {

// The product Yt[m][n] = sum_k W[m][k] * Xt[k][n], computed as Y transposed so that a
// register holds 16 consecutive tokens of one output row.
//   - a micro-kernel keeps a kRows x (16 * kVectors) tile of outputs in 24 zmm registers; per
//     k it loads kVectors vectors of Xt and broadcasts kRows weights: 24 FMAs for 10 loads;
//   - the weights of kRows rows are first converted to f32 (once per row block and k block,
//     then reused by every token tile);
//   - k is cut into blocks whose slice of Xt (n_tokens x k_block floats) stays in L2 while
//     each thread walks its rows, and the tile accumulates in Yt across k blocks;
//   - Xt and Yt are the transposes of ggml's layouts, made by transpose_f32.
constexpr int kRows = 6;
constexpr int kVectors = 4;
constexpr int64_t kTileTokens = kLanes * kVectors;
// Bytes of Xt a k block may span (a quarter of a 2 MiB L2: room for the weights and Yt tiles).
constexpr int64_t kXtBlockBytes = 512 * 1024;
constexpr int64_t kMinKBlock = 64;

// Yt[r][n0 + j] (+)= sum over k < k_len of w[r][k] * xt[k][n0 + j], for r < ROWS and
// j < 16 * VECTORS; yt points at Yt[row 0][n0]. The last vector is masked to `last_mask`
// (a tile past the last token).
template <int ROWS, int VECTORS>
__attribute__((target("avx512f,f16c"))) void micro_kernel(const float * w, int64_t w_stride, const float * xt,
                                                      int64_t xt_stride, int64_t k_len, float * yt, int64_t yt_stride,
                                                      __mmask16 last_mask, bool accumulate) {
    __m512 acc[ROWS][VECTORS];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            const __mmask16 mask = v == VECTORS - 1 ? last_mask : __mmask16(0xFFFF);
            acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(mask, yt + r * yt_stride + v * kLanes) : _mm512_setzero_ps();
        }
    }
    for (int64_t k = 0; k < k_len; ++k) {
        const float * x_row = xt + k * xt_stride;
        __m512 x[VECTORS];
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            const __mmask16 mask = v == VECTORS - 1 ? last_mask : __mmask16(0xFFFF);
            x[v] = _mm512_maskz_loadu_ps(mask, x_row + v * kLanes);
        }
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
            const __m512 weight = _mm512_set1_ps(w[r * w_stride + k]);
#pragma GCC unroll 4
            for (int v = 0; v < VECTORS; ++v) acc[r][v] = _mm512_fmadd_ps(weight, x[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            const __mmask16 mask = v == VECTORS - 1 ? last_mask : __mmask16(0xFFFF);
            _mm512_mask_storeu_ps(yt + r * yt_stride + v * kLanes, mask, acc[r][v]);
        }
    }
}

using MicroKernel = void (*)(const float *, int64_t, const float *, int64_t, int64_t, float *, int64_t, __mmask16,
                             bool);

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

void gemm_avx512_task(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * xt = dst->src[1];
    const int64_t k = w->ne[0], m = w->ne[1], n_tokens = xt->ne[0];

    const int64_t row_blocks = (m + kRows - 1) / kRows;
    const int64_t first_row = row_blocks * ith / nth * kRows;
    const int64_t end_row = std::min(m, row_blocks * (ith + 1) / nth * kRows);
    if (first_row >= end_row) return;

    // Whole quantization blocks (256 weights covers every type's block size).
    const int64_t k_align = ggml_is_quantized(w->type) ? 256 : 1;
    int64_t k_block = std::max(kMinKBlock, kXtBlockBytes / (n_tokens * int64_t(sizeof(float))));
    k_block = std::min(k, std::max(k_align, k_block / k_align * k_align));
    thread_local std::vector<float> weights;
    weights.resize(static_cast<size_t>(kRows * k_block));

    const auto * w_data = static_cast<const char *>(w->data);
    const auto * xt_data = static_cast<const float *>(xt->data);
    auto * yt_data = static_cast<float *>(dst->data);
    const int64_t xt_stride = static_cast<int64_t>(xt->nb[1] / sizeof(float));
    const int64_t yt_stride = static_cast<int64_t>(dst->nb[1] / sizeof(float));

    for (int64_t k0 = 0; k0 < k; k0 += k_block) {
        const int64_t k_len = std::min(k_block, k - k0);
        for (int64_t row = first_row; row < end_row; row += kRows) {
            const int rows = static_cast<int>(std::min<int64_t>(kRows, end_row - row));
            for (int r = 0; r < rows; ++r) {
                row_to_f32(w->type, w_data + (row + r) * w->nb[1], k0, k_len, weights.data() + r * k_len);
            }
            for (int64_t n0 = 0; n0 < n_tokens; n0 += kTileTokens) {
                const int64_t tile = std::min(kTileTokens, n_tokens - n0);
                const int vectors = static_cast<int>((tile + kLanes - 1) / kLanes);
                const int tail = static_cast<int>(tile - (vectors - 1) * kLanes);
                const auto last_mask = static_cast<__mmask16>((1u << tail) - 1u);
                pick_kernel(rows, vectors)(weights.data(), k_len, xt_data + k0 * xt_stride + n0, xt_stride, k_len,
                                           yt_data + row * yt_stride + n0, yt_stride, last_mask, k0 > 0);
            }
        }
    }
    if (userdata != nullptr) reinterpret_cast<ReleasePages>(userdata)(w_data + first_row * w->nb[1], w_data + end_row * w->nb[1]);
}

}  // namespace gptj

#else

namespace gptj {
void gemm_avx512_task(ggml_tensor *, int, int, void *) {}  // never built into a graph without AVX-512
}  // namespace gptj

#endif

namespace gptj {
namespace {

// ggml custom op: dst F32 [n1, n0] = src[0] F32 [n0, n1] (rows contiguous) transposed, in 32 x 32
// blocks.
void transpose_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    constexpr int64_t kBlock = 32;
    const ggml_tensor * src = dst->src[0];
    const int64_t n0 = src->ne[0], n1 = src->ne[1];
    const auto * in = static_cast<const float *>(src->data);
    const int64_t in_stride = static_cast<int64_t>(src->nb[1] / sizeof(float));  // a view may pad its rows
    auto * out = static_cast<float *>(dst->data);
    const int64_t blocks = (n1 + kBlock - 1) / kBlock;  // bands of source rows, split among threads
    for (int64_t band = blocks * ith / nth; band < blocks * (ith + 1) / nth; ++band) {
        const int64_t i1_end = std::min(n1, (band + 1) * kBlock);
        for (int64_t i0 = 0; i0 < n0; i0 += kBlock) {
            const int64_t i0_end = std::min(n0, i0 + kBlock);
            for (int64_t a = i0; a < i0_end; ++a) {
                for (int64_t b = band * kBlock; b < i1_end; ++b) out[a * n1 + b] = in[b * in_stride + a];
            }
        }
    }
}

}  // namespace

ggml_tensor * transpose_f32(ggml_context * ctx, ggml_tensor * a) {
    ggml_tensor * args[] = {a};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, a->ne[1], a->ne[0], 1, 1, args, 1, transpose_task, GGML_N_TASKS_MAX,
                          nullptr);
}

}  // namespace gptj
