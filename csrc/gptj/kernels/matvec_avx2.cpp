#include "gptj/kernels/matvec_avx2.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gptj/kernels/dequantize.h"
#include "gptj/kernels/isa.h"
#include "gptj/kernels/matvec.h"
#include "gptj/kernels/row_stripes.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "gptj/kernels/avx2.h"

namespace gptj {
namespace {

// Prefetch distance in each row's stream, as in matvec.cpp.
constexpr int64_t kPrefetchBytes = 512;
// Tokens per pass over the weights, and the rows a pass covers while they stay in L2 when a
// batch takes several passes (64 rows of 4096 f16 weights: 512 KiB).
constexpr int kPassTokens = 4;
constexpr int64_t kPassRows = 32;

// Bytes per weight (a constant: a division in the loop, for the prefetch address, cost more than
// the prefetch gained).
template <ggml_type TYPE>
constexpr int64_t kWeightBytes = TYPE == GGML_TYPE_F32 ? 4 : 2;

// Weights i .. i + 7 of a row as f32.
template <ggml_type TYPE>
GPTJ_AVX2 __attribute__((always_inline)) inline __m256 load_8(const void * row, int64_t i) {
    if constexpr (TYPE == GGML_TYPE_F32) {
        return _mm256_loadu_ps(static_cast<const float *>(row) + i);
    } else if constexpr (TYPE == GGML_TYPE_F16) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const ggml_fp16_t *>(row) + i)));
    } else {
        static_assert(TYPE == GGML_TYPE_BF16, "dense types: f32, f16, bf16");
        const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(row) + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
    }
}

template <ggml_type TYPE>
float weight_at(const void * row, int64_t i) {
    if constexpr (TYPE == GGML_TYPE_F32) {
        return static_cast<const float *>(row)[i];
    } else if constexpr (TYPE == GGML_TYPE_F16) {
        return ggml_fp16_to_fp32(static_cast<const ggml_fp16_t *>(row)[i]);
    } else {
        const uint32_t bits = uint32_t(static_cast<const uint16_t *>(row)[i]) << 16;
        float value;
        std::memcpy(&value, &bits, sizeof value);
        return value;
    }
}

// y[t][row] = dot(w_row, x[t]) for t < TOKENS, ROWS rows at a time, one from each of ROWS stripes
// (row_stripes.h) (ROWS memory streams in flight per thread, each activation load serving ROWS
// rows). Fewer than 8 (row, token) pairs take an accumulator per half of each 16-weight step: 8
// independent FMA chains keep both FMA ports busy (4 chains of 4-cycle FMAs ran rows in L2 at 0.7x
// ggml's speed, k = 256).
template <ggml_type TYPE, int ROWS, int TOKENS>
GPTJ_AVX2 void rows_times_tokens(const ggml_tensor * w, const float * x, int64_t x_stride, int64_t first_row,
                                 int64_t end_row, float * y, int64_t y_stride) {
    constexpr int kChains = ROWS * TOKENS < 8 ? 2 : 1;
    const int64_t k = w->ne[0], k_whole = k / 16 * 16;
    const auto * w_data = static_cast<const char *>(w->data);
    const int64_t row_bytes = static_cast<int64_t>(w->nb[1]);
    const RowStripes<ROWS> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const void * w_row[ROWS];
        for (int r = 0; r < ROWS; ++r) w_row[r] = w_data + stripes.row_to_read(r, pass) * row_bytes;
        __m256 acc[kChains][ROWS][TOKENS];
#pragma GCC unroll 2
        for (int c = 0; c < kChains; ++c) {
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
                for (int t = 0; t < TOKENS; ++t) acc[c][r][t] = _mm256_setzero_ps();
            }
        }
        for (int64_t i = 0; i < k_whole; i += 16) {
            if (i % 32 == 0) {  // one prefetch per row per 32 weights (a cache line of f16)
#pragma GCC unroll 4
                for (int r = 0; r < ROWS; ++r) {
                    _mm_prefetch(static_cast<const char *>(w_row[r]) + i * kWeightBytes<TYPE> + kPrefetchBytes, _MM_HINT_T0);
                }
            }
#pragma GCC unroll 2
            for (int half = 0; half < 2; ++half) {
                __m256 weights[ROWS];
#pragma GCC unroll 4
                for (int r = 0; r < ROWS; ++r) weights[r] = load_8<TYPE>(w_row[r], i + 8 * half);
#pragma GCC unroll 4
                for (int t = 0; t < TOKENS; ++t) {
                    const __m256 xv = _mm256_loadu_ps(x + t * x_stride + i + 8 * half);
#pragma GCC unroll 4
                    for (int r = 0; r < ROWS; ++r) {
                        __m256 & chain = acc[half % kChains][r][t];
                        chain = _mm256_fmadd_ps(weights[r], xv, chain);
                    }
                }
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int t = 0; t < TOKENS; ++t) {
                const __m256 joined = kChains == 2 ? _mm256_add_ps(acc[0][r][t], acc[kChains - 1][r][t]) : acc[0][r][t];
                float sum = avx2::horizontal_sum(joined);
                for (int64_t i = k_whole; i < k; ++i) sum += weight_at<TYPE>(w_row[r], i) * x[t * x_stride + i];
                y[t * y_stride + row] = sum;
            }
        }
    }
}

using RowsKernel = void (*)(const ggml_tensor *, const float *, int64_t, int64_t, int64_t, float *, int64_t);

// One token: 4 rows; 2-4 tokens: 2 rows (their accumulators, weights and activations fill the
// 16 ymm registers).
template <ggml_type TYPE>
RowsKernel pick_tokens(int tokens) {
    static_assert(kPassTokens == 4, "the dispatch below covers 1..4 tokens");
    switch (tokens) {
        case 1: return rows_times_tokens<TYPE, 4, 1>;
        case 2: return rows_times_tokens<TYPE, 2, 2>;
        case 3: return rows_times_tokens<TYPE, 2, 3>;
        default: return rows_times_tokens<TYPE, 2, 4>;
    }
}

RowsKernel pick(ggml_type type, int tokens) {
    switch (type) {
        case GGML_TYPE_F32: return pick_tokens<GGML_TYPE_F32>(tokens);
        case GGML_TYPE_F16: return pick_tokens<GGML_TYPE_F16>(tokens);
        default: return pick_tokens<GGML_TYPE_BF16>(tokens);  // matvec_avx2_supported admits no other
    }
}

}  // namespace

bool matvec_avx2_supported(const ggml_tensor * weights, bool in_plain_memory) {
    const ggml_type type = weights->type;
    return (type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) && in_plain_memory &&
           ggml_is_contiguous(weights) && !cpu_has_avx512f() && cpu_has_avx2();
}

void matvec_avx2_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const auto [first_row, end_row] = thread_rows(w->ne[1], ith, nth);
    if (first_row >= end_row) return;
    const auto * xs = static_cast<const float *>(x->data);
    auto * y = static_cast<float *>(dst->data);
    const int64_t x_stride = int64_t(x->nb[1] / sizeof(float)), y_stride = int64_t(dst->nb[1] / sizeof(float));
    const int n_tokens = static_cast<int>(x->ne[1]);
    in_passes(first_row, end_row, n_tokens, kPassTokens, kPassRows, [&](int64_t first, int64_t end, int t, int tokens) {
        pick(w->type, tokens)(w, xs + t * x_stride, x_stride, first, end, y + t * y_stride, y_stride);
    });
}

}  // namespace gptj

#else

namespace gptj {
bool matvec_avx2_supported(const ggml_tensor *, bool) { return false; }
void matvec_avx2_task(ggml_tensor *, int, int, void *) {}  // never built into a graph without AVX2
}  // namespace gptj

#endif
