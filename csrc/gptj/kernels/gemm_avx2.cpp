#include "gptj/kernels/gemm_avx2.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <utility>
#include <vector>

#include "gptj/kernels/dequantize.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "gptj/kernels/weight_loads_avx2.h"
#include "gptj/memory.h"

namespace gptj {
namespace {

// The product Yt[m][n] = sum_k W[m][k] * Xt[k][n], computed as Y transposed so that a
// register holds 8 consecutive tokens of one output row. Blocked for the cache as GotoBLAS
// does, with the roles chosen for a weight matrix that is much larger than the activations:
//   - k is cut into blocks of kKBlock, and each thread's rows into blocks of kRowBlock; a row
//     block's weights are converted to f32 once per k block (kRowBlock x kKBlock floats,
//     96 KiB: in L2) and reused by every token tile of the batch;
//   - a token tile (kTileTokens tokens x kKBlock of Xt, 24 KiB: in L1) is reused by every
//     micro-kernel call along the row block;
//   - the micro-kernel keeps a kRows x (8 * kVectors) tile of outputs in 12 of the 16 ymm
//     registers; per k it loads kVectors vectors of Xt and broadcasts kRows weights, and
//     accumulates in Yt across k blocks.
//   - the rows of a thread are walked in panels whose outputs (Yt, read and written once per k
//     block) stay in cache: kPanelBytes of Yt (a whole thread's Yt at 512 tokens and 8192 rows
//     is 16 MiB, which went to memory and back every k block: 39 -> 40 tok/s, f16 pp512, 1 thread).
constexpr int kRows = 4;
constexpr int kVectors = 3;
constexpr int64_t kTileTokens = kLanesAvx2 * kVectors;
// A multiple of 256 (whole blocks of every quantized type, q4_K's super-blocks included).
constexpr int64_t kKBlock = 256;
constexpr int64_t kRowBlock = 96;  // a multiple of kRows
constexpr int64_t kPanelBytes = 1024 * 1024;
static_assert(kRowBlock % kRows == 0, "row blocks hold whole micro-kernel tiles");

// Lanes below `n` set, as the sign bits _mm256_maskload_ps reads.
GPTJ_AVX2 __m256i first_lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Yt[r][n0 + j] (+)= sum over k < k_len of w[r][k] * xt[k][j], for r < ROWS and j < 8 * VECTORS;
// xt is a token tile's packed rows (8 * VECTORS floats per k, zero past the last token), yt points
// at Yt[row 0][n0]. MASKED: only the first `tail` tokens of the last vector are outputs (a tile
// past the last token): loaded and stored masked.
template <int ROWS, int VECTORS, bool MASKED>
GPTJ_AVX2 void micro_kernel(const float * w, int64_t w_stride, const float * xt, int64_t k_len, float * yt,
                            int64_t yt_stride, int tail, bool accumulate) {
    constexpr int64_t kWidth = kLanesAvx2 * VECTORS;
    auto is_masked = [](int v) { return MASKED && v == VECTORS - 1; };
    const __m256i last_mask = first_lanes(tail);
    __m256 acc[ROWS][VECTORS];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            float * out = yt + r * yt_stride + v * kLanesAvx2;
            acc[r][v] = !accumulate     ? _mm256_setzero_ps()
                        : is_masked(v) ? _mm256_maskload_ps(out, last_mask)
                                       : _mm256_loadu_ps(out);
        }
    }
    for (int64_t k = 0; k < k_len; ++k) {
        __m256 x[VECTORS];
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) x[v] = _mm256_loadu_ps(xt + k * kWidth + v * kLanesAvx2);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
            const __m256 weight = _mm256_broadcast_ss(w + r * w_stride + k);
#pragma GCC unroll 4
            for (int v = 0; v < VECTORS; ++v) acc[r][v] = _mm256_fmadd_ps(weight, x[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) {
            float * out = yt + r * yt_stride + v * kLanesAvx2;
            if (is_masked(v)) {
                _mm256_maskstore_ps(out, last_mask, acc[r][v]);
            } else {
                _mm256_storeu_ps(out, acc[r][v]);
            }
        }
    }
}

using MicroKernel = void (*)(const float *, int64_t, const float *, int64_t, float *, int64_t, int, bool);

// kernels[rows - 1][vectors - 1][masked], every tile shape a partial block can leave.
struct KernelTable {
    MicroKernel kernels[kRows][kVectors][2];
};

template <int ROWS, int... V>
constexpr void fill_row(KernelTable & table, std::integer_sequence<int, V...>) {
    ((table.kernels[ROWS - 1][V][0] = micro_kernel<ROWS, V + 1, false>,
      table.kernels[ROWS - 1][V][1] = micro_kernel<ROWS, V + 1, true>),
     ...);
}

template <int... R>
constexpr KernelTable make_table(std::integer_sequence<int, R...>) {
    KernelTable table{};
    (fill_row<R + 1>(table, std::make_integer_sequence<int, kVectors>{}), ...);
    return table;
}

constexpr KernelTable kKernels = make_table(std::make_integer_sequence<int, kRows>{});

// One tile of tokens: from token n0, `vectors` vectors, the last one masked to `tail` tokens
// when tail < 8. In the packed activations (pack_tokens_avx2) the tile's k rows of 8 * vectors
// floats follow one another from float n0 * k: every tile before it is whole.
struct TokenTile {
    int64_t n0;
    int vectors;
    int tail;
};

// The batch cut into tiles of kVectors vectors. A last tile of one vector would leave the FMA
// units waiting on 4 accumulator chains (FMA latency 4 cycles, 2 per cycle: 8 chains keep them
// busy), so the last two tiles are 2 + 2 vectors rather than 3 + 1.
std::vector<TokenTile> token_tiles(int64_t n_tokens) {
    const int64_t total = (n_tokens + kLanesAvx2 - 1) / kLanesAvx2;
    std::vector<int> sizes(static_cast<size_t>(total / kVectors), kVectors);
    if (const int rest = static_cast<int>(total % kVectors); rest > 0) sizes.push_back(rest);
    if (kVectors == 3 && sizes.size() >= 2 && sizes.back() == 1) {
        sizes.back() = 2;
        sizes[sizes.size() - 2] = 2;
    }
    std::vector<TokenTile> tiles;
    int64_t n0 = 0;
    for (const int vectors : sizes) {
        const int64_t end = std::min(n_tokens, n0 + vectors * int64_t(kLanesAvx2));
        tiles.push_back({n0, vectors, static_cast<int>(end - n0 - (vectors - 1) * kLanesAvx2)});
        n0 = end;
    }
    return tiles;
}

// The weights of the block converted next, fetched into L2 a slice at a time while the current
// block computes: converting waits on memory otherwise (12% of a 128-token f16 prompt's time),
// with the FMA units idle, and the hardware prefetchers do not follow 96 rows' short stretches.
class NextBlockPrefetch {
  public:
    // Rows [first, first + rows) at weights k0 .. k0 + k_len of w; rows == 0: nothing next.
    NextBlockPrefetch(const ggml_tensor * w, int64_t first, int64_t rows, int64_t k0, int64_t k_len, int64_t calls)
        : start_(static_cast<const char *>(w->data) + first * w->nb[1] + ggml_row_size(w->type, k0)),
          row_bytes_(static_cast<int64_t>(w->nb[1])),
          lines_per_row_((static_cast<int64_t>(ggml_row_size(w->type, k_len)) + 63) / 64),
          lines_(rows * lines_per_row_),
          per_call_((lines_ + calls - 1) / std::max<int64_t>(calls, 1)) {}

    // The next slice: called once per micro-kernel call, `calls` times in all.
    void next() {
        for (int64_t end = std::min(lines_, done_ + per_call_); done_ < end; ++done_) {
            const int64_t row = done_ / lines_per_row_, line = done_ % lines_per_row_;
            _mm_prefetch(start_ + row * row_bytes_ + line * 64, _MM_HINT_T1);
        }
    }

  private:
    const char * start_;
    int64_t row_bytes_, lines_per_row_, lines_, per_call_;
    int64_t done_ = 0;
};

}  // namespace

GPTJ_AVX2 void gemm_avx2_task(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * xt = dst->src[1];
    const int64_t k = w->ne[0], m = w->ne[1], n_tokens = dst->ne[0];

    const int64_t micro_blocks = (m + kRows - 1) / kRows;
    const int64_t first_row = micro_blocks * ith / nth * kRows;
    const int64_t end_row = std::min(m, micro_blocks * (ith + 1) / nth * kRows);
    if (first_row >= end_row) return;

    const int64_t k_block = std::min(k, kKBlock);
    thread_local std::vector<float> weights;
    weights.resize(static_cast<size_t>(kRowBlock * k_block));
    const std::vector<TokenTile> tiles = token_tiles(n_tokens);

    const auto * w_data = static_cast<const char *>(w->data);
    const auto * xt_data = static_cast<const float *>(xt->data);
    auto * yt_data = static_cast<float *>(dst->data);
    const int64_t yt_stride = static_cast<int64_t>(dst->nb[1] / sizeof(float));

    const int64_t panel_rows =
        std::max<int64_t>(1, kPanelBytes / (n_tokens * int64_t(sizeof(float))) / kRowBlock) * kRowBlock;
    for (int64_t panel = first_row; panel < end_row; panel += panel_rows) {
    const int64_t panel_end = std::min(end_row, panel + panel_rows);
    for (int64_t k0 = 0; k0 < k; k0 += k_block) {
        const int64_t k_len = std::min(k_block, k - k0);
        for (int64_t block = panel; block < panel_end; block += kRowBlock) {
            const int64_t block_rows = std::min(kRowBlock, panel_end - block);
            for (int64_t r = 0; r < block_rows; ++r) {
                row_to_f32(w->type, w_data + (block + r) * w->nb[1], k0, k_len, weights.data() + r * k_len);
            }
            // The next block: the next rows at this k block, else the panel's first rows at the next
            // one, else the next panel's first rows at the first k block.
            const bool last_rows = block + kRowBlock >= panel_end;
            const bool last_k = k0 + k_block >= k;
            const int64_t next_first = !last_rows ? block + kRowBlock : !last_k ? panel : panel_end;
            const int64_t next_k0 = !last_rows ? k0 : !last_k ? k0 + k_block : 0;
            const int64_t next_end = next_first == panel_end ? std::min(end_row, panel_end + panel_rows) : panel_end;
            const int64_t next_rows = std::max<int64_t>(0, std::min(kRowBlock, next_end - next_first));
            const int64_t calls = static_cast<int64_t>(tiles.size()) * ((block_rows + kRows - 1) / kRows);
            NextBlockPrefetch prefetch(w, next_first, next_rows, next_k0, std::min(k_block, k - next_k0), calls);
            for (const TokenTile & tile : tiles) {
                const bool masked = tile.tail < kLanesAvx2;
                const float * xt_tile = xt_data + tile.n0 * k + k0 * tile.vectors * kLanesAvx2;
                for (int64_t r = 0; r < block_rows; r += kRows) {
                    const int rows = static_cast<int>(std::min<int64_t>(kRows, block_rows - r));
                    prefetch.next();
                    kKernels.kernels[rows - 1][tile.vectors - 1][masked](
                        weights.data() + r * k_len, k_len, xt_tile, k_len,
                        yt_data + (block + r) * yt_stride + tile.n0, yt_stride, tile.tail, k0 > 0);
                }
            }
        }
    }
    }
    if (userdata != nullptr) {
        reinterpret_cast<ReleasePages>(userdata)(w_data + first_row * w->nb[1], w_data + end_row * w->nb[1]);
    }
}

namespace {

// ggml custom op: dst = src[0] (F32 [k, n_tokens], rows contiguous) in token tiles (TokenTile).
// Thread ith of nth packs a range of k for every tile, 64 k at a time (a block of each token's
// row read, and its tile's rows written, while in L1).
void pack_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    constexpr int64_t kStep = 64;
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], n_tokens = x->ne[1];
    const int64_t x_stride = static_cast<int64_t>(x->nb[1] / sizeof(float));
    const auto * in = static_cast<const float *>(x->data);
    auto * out = static_cast<float *>(dst->data);
    const int64_t steps = (k + kStep - 1) / kStep;
    const std::vector<TokenTile> tiles = token_tiles(n_tokens);
    for (int64_t step = steps * ith / nth; step < steps * (ith + 1) / nth; ++step) {
        const int64_t k_begin = step * kStep, k_end = std::min(k, k_begin + kStep);
        for (const TokenTile & tile : tiles) {
            const int64_t width = tile.vectors * kLanesAvx2;
            float * packed = out + tile.n0 * k;
            for (int64_t j = 0; j < width; ++j) {
                const int64_t token = tile.n0 + j;
                if (token >= n_tokens) {  // padding: zeros, so that whole vectors can be loaded
                    for (int64_t i = k_begin; i < k_end; ++i) packed[i * width + j] = 0.0f;
                    continue;
                }
                const float * row = in + token * x_stride;
                for (int64_t i = k_begin; i < k_end; ++i) packed[i * width + j] = row[i];
            }
        }
    }
}

}  // namespace

ggml_tensor * pack_tokens_avx2(ggml_context * ctx, ggml_tensor * x) {
    const int64_t n_padded = (x->ne[1] + kLanesAvx2 - 1) / kLanesAvx2 * kLanesAvx2;
    ggml_tensor * args[] = {x};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, n_padded, x->ne[0], 1, 1, args, 1, pack_task, GGML_N_TASKS_MAX,
                          nullptr);
}

}  // namespace gptj

#else

namespace gptj {
void gemm_avx2_task(ggml_tensor *, int, int, void *) {}  // never built into a graph without AVX2
ggml_tensor * pack_tokens_avx2(ggml_context *, ggml_tensor * x) { return x; }
}  // namespace gptj

#endif
