#include "gptj/kernels/matvec.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "gptj/kernels/dequantize.h"
#include "gptj/kernels/row_stripes.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "gptj/kernels/weight_loads.h"

namespace gptj {
namespace {

// Software prefetch distance in each row's stream, on top of the hardware prefetchers; measured
// (4-layer 6B-shaped, ms/token f16 / q8_0): none 79.0 / 49.8, 256 B 78.4 / 46.8, 512 B 75.8 / 46.3,
// 2 KiB 93.5 / 58.5.
constexpr int64_t kPrefetchBytes = 512;

// Bytes of 32 weights of a row (a constant: the prefetch address was a 64-bit division per 64
// weights).
template <ggml_type TYPE>
constexpr int64_t kBytesPer32Weights = TYPE == GGML_TYPE_F32   ? 128
                                       : TYPE == GGML_TYPE_Q8_0 ? 34
                                       : TYPE == GGML_TYPE_Q4_0 ? 18
                                       : TYPE == GGML_TYPE_Q4_K ? 18
                                                                : 64;  // f16, bf16

// y[t][row] = dot(w_row, x[t]) for t < TOKENS, converting each weight as it streams by. ROWS rows
// at a time, one from each of ROWS stripes (row_stripes.h): ROWS memory streams in flight per
// thread (one stream left the memory bus half idle) and each activation load serves ROWS rows.
template <ggml_type TYPE, int TOKENS>
GPTJ_AVX512 void rows_times_tokens(const ggml_tensor * w, const float * x, int64_t x_stride, int64_t first_row,
                                   int64_t end_row, float * y, int64_t y_stride) {
    // ROWS x TOKENS accumulators, 2 ROWS converted weight vectors and 2 activation vectors fit
    // the 32 zmm registers.
    constexpr int ROWS = TOKENS == 1 ? 8 : TOKENS <= 3 ? 4 : 2;
    const int64_t k = w->ne[0];
    const int64_t k_whole = k / 32 * 32;
    const auto * w_data = static_cast<const char *>(w->data);
    const RowStripes<ROWS> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const void * w_row[ROWS];
        for (int r = 0; r < ROWS; ++r) w_row[r] = w_data + stripes.row_to_read(r, pass) * w->nb[1];
        __m512 acc[ROWS][TOKENS];
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 8
            for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm512_setzero_ps();
        }
        for (int64_t i = 0; i < k_whole; i += 32) {
            __m512 low[ROWS], high[ROWS];
            if (i % 64 == 0) {  // one prefetch per row per 64 weights (at least one cache line of them)
#pragma GCC unroll 8
                for (int r = 0; r < ROWS; ++r) {
                    const int64_t ahead = i / 32 * kBytesPer32Weights<TYPE> + kPrefetchBytes;
                    _mm_prefetch(static_cast<const char *>(w_row[r]) + ahead, _MM_HINT_T0);
                }
            }
#pragma GCC unroll 8
            for (int r = 0; r < ROWS; ++r) load_32_weights<TYPE>(w_row[r], i, low[r], high[r]);
#pragma GCC unroll 8
            for (int t = 0; t < TOKENS; ++t) {
                const __m512 x_low = _mm512_loadu_ps(x + t * x_stride + i);
                const __m512 x_high = _mm512_loadu_ps(x + t * x_stride + i + kLanes);
#pragma GCC unroll 8
                for (int r = 0; r < ROWS; ++r) {
                    acc[r][t] = _mm512_fmadd_ps(high[r], x_high, _mm512_fmadd_ps(low[r], x_low, acc[r][t]));
                }
            }
        }
        if (k_whole < k) {  // the last few weights of a dense row
            const int64_t left = k - k_whole;
            const auto mask_low = static_cast<__mmask16>(left >= 16 ? 0xFFFF : (1u << left) - 1u);
            const auto mask_high = static_cast<__mmask16>(left <= 16 ? 0 : (1u << (left - 16)) - 1u);
            for (int r = 0; r < ROWS; ++r) {
                alignas(64) float tail[32] = {};
                row_to_f32(TYPE, w_row[r], k_whole, left, tail);
                for (int t = 0; t < TOKENS; ++t) {
                    const float * xt = x + t * x_stride + k_whole;
                    acc[r][t] = _mm512_fmadd_ps(_mm512_load_ps(tail), _mm512_maskz_loadu_ps(mask_low, xt), acc[r][t]);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_load_ps(tail + 16), _mm512_maskz_loadu_ps(mask_high, xt + 16),
                                                acc[r][t]);
                }
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int t = 0; t < TOKENS; ++t) y[t * y_stride + row] = _mm512_reduce_add_ps(acc[r][t]);
        }
    }
}

// Rows per block of a multi-pass product: 64 rows of 4096 q8_0 weights are 272 KiB, in L2
// (2 MiB per core) with the activations.
constexpr int64_t kPassRows = 64;

using RowsKernel = void (*)(const ggml_tensor *, const float *, int64_t, int64_t, int64_t, float *, int64_t);

template <ggml_type TYPE, int... TOKENS>
RowsKernel pick_tokens(int tokens, std::integer_sequence<int, TOKENS...>) {
    RowsKernel kernel = nullptr;
    // The instance for `tokens` (1..kMatvecPassTokens): rows_times_tokens<TYPE, tokens>.
    ((kernel = tokens == TOKENS + 1 ? rows_times_tokens<TYPE, TOKENS + 1> : kernel), ...);
    return kernel;
}

template <ggml_type TYPE>
RowsKernel pick_tokens(int tokens) {
    return pick_tokens<TYPE>(tokens, std::make_integer_sequence<int, kMatvecPassTokens>{});
}

RowsKernel pick(ggml_type type, int tokens) {
    switch (type) {
        case GGML_TYPE_F32: return pick_tokens<GGML_TYPE_F32>(tokens);
        case GGML_TYPE_F16: return pick_tokens<GGML_TYPE_F16>(tokens);
        case GGML_TYPE_BF16: return pick_tokens<GGML_TYPE_BF16>(tokens);
        case GGML_TYPE_Q8_0: return pick_tokens<GGML_TYPE_Q8_0>(tokens);
        default: return pick_tokens<GGML_TYPE_Q4_0>(tokens);  // matvec_handles() admits no other
    }
}

}  // namespace

bool matvec_handles(ggml_type type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 || type == GGML_TYPE_Q8_0 ||
           type == GGML_TYPE_Q4_0;
}

void matvec_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const auto [first_row, end_row] = thread_rows(w->ne[1], ith, nth);
    if (first_row >= end_row) return;
    const auto * xs = static_cast<const float *>(x->data);
    auto * y = static_cast<float *>(dst->data);
    const int64_t x_stride = int64_t(x->nb[1] / sizeof(float)), y_stride = int64_t(dst->nb[1] / sizeof(float));
    const int n_tokens = static_cast<int>(x->ne[1]);
    in_passes(first_row, end_row, n_tokens, kMatvecPassTokens, kPassRows, [&](int64_t first, int64_t end, int t, int tokens) {
        pick(w->type, tokens)(w, xs + t * x_stride, x_stride, first, end, y + t * y_stride, y_stride);
    });
}

}  // namespace gptj

#else

namespace gptj {
bool matvec_handles(ggml_type) { return false; }
void matvec_task(ggml_tensor *, int, int, void *) {}  // never built into a graph without AVX-512
}  // namespace gptj

#endif
