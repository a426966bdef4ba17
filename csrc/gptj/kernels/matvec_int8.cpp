#include "gptj/kernels/matvec_int8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "gptj/kernels/dequantize.h"
#include "gptj/kernels/matvec.h"
#include "gptj/kernels/quant_blocks.h"
#include "gptj/kernels/row_stripes.h"

namespace gptj {
namespace {

std::atomic<bool> g_enabled{true};

// The activations' int8 form, per group of 8 tokens (one ggml row per group):
// - k * 8 bytes: for each run of 8 weights' positions c (k / 8 of them), 64 bytes, token slot
//   t (0..7) at 8 t: that token's 8 activations q at 8 c .. 8 c + 7 (s8). Each 8 weight bytes
//   of a row, broadcast to the 8 slots, meet every token's activations in one vpdpbusd, and a
//   block of 32 weights accumulates in 4 of them before its scales are applied.
// - k / 32 * 16 floats: per block, each token's scale twice (its slot's two int32 lanes).
// - k / 32 * 16 int32: per block and lane, -128 * the sum of the activations that lane meets.
//   vpdpbusd multiplies u8 by s8; the weights go in as u8 = w + 128 (an xor, shared by every
//   token), and the accumulator starts at this, so it ends at sum(w q) exactly.
// Slots past the last token hold q = 0 with scale 0.
constexpr int kGroupTokens = 8;
int64_t group_bytes(int64_t k) { return k * 8 + k / 32 * 16 * int64_t(sizeof(float) + sizeof(int32_t)); }

}  // namespace

void set_int8_matvec_enabled(bool enabled) { g_enabled = enabled; }
bool int8_matvec_enabled() { return g_enabled; }

}  // namespace gptj

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "gptj/kernels/weight_loads.h"

#define GPTJ_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,f16c,fma")))

namespace gptj {
namespace {

// Prefetch distance in each row's stream, as in matvec.cpp.
constexpr int64_t kPrefetchBytes = 512;

// Writes a group's accumulator: token slot t's two lanes (2 t, 2 t + 1) add up to its output, at
// y[token * y_stride] for the group's tokens that exist.
GPTJ_AVX512_VNNI inline void store_group(__m512 acc, int group, int n_tokens, float * y, int64_t y_stride) {
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc);
    for (int t = 0; t < kGroupTokens && group * kGroupTokens + t < n_tokens; ++t) {
        y[(group * kGroupTokens + t) * y_stride] = lanes[2 * t] + lanes[2 * t + 1];
    }
}

// y[t][row] for the tokens of GROUPS groups, ROWS rows at a time, one from each of ROWS stripes
// (row_stripes.h) (ROWS memory streams in flight, and each activation vector loaded serves ROWS
// rows). q8_0 weights go in as u8 = w + 128, q4_0's as their nibbles n (w = n - 8), so the
// accumulator starts at -128 or -8 times the activations' sum.
template <ggml_type TYPE, int GROUPS>
GPTJ_AVX512_VNNI void quantized_rows(const ggml_tensor * w, const uint8_t * x, int64_t x_group_stride, int n_tokens,
                                int64_t first_row, int64_t end_row, float * y, int64_t y_stride) {
    constexpr int ROWS = GROUPS == 1 ? 6 : 4;
    const int64_t k = w->ne[0];
    const int64_t blocks = k / 32;
    const auto * w_data = static_cast<const char *>(w->data);
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
    const RowStripes<ROWS> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        using Block = std::conditional_t<TYPE == GGML_TYPE_Q8_0, BlockQ8_0, BlockQ4_0>;
        const Block * w_row[ROWS];
        for (int r = 0; r < ROWS; ++r) {
            w_row[r] = reinterpret_cast<const Block *>(w_data + stripes.row_to_read(r, pass) * w->nb[1]);
        }
        __m512 acc[ROWS][GROUPS];
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 2
            for (int g = 0; g < GROUPS; ++g) acc[r][g] = _mm512_setzero_ps();
        }
        for (int64_t b = 0; b < blocks; ++b) {
            if (b % 2 == 0) {
#pragma GCC unroll 8
                for (int r = 0; r < ROWS; ++r) {
                    _mm_prefetch(reinterpret_cast<const char *>(w_row[r] + b) + kPrefetchBytes, _MM_HINT_T0);
                }
            }
            __m512i xv[GROUPS][4];
            __m512 xs[GROUPS];
            __m512i start[GROUPS];
#pragma GCC unroll 2
            for (int g = 0; g < GROUPS; ++g) {
                const uint8_t * xg = x + g * x_group_stride;
#pragma GCC unroll 4
                for (int j = 0; j < 4; ++j) xv[g][j] = _mm512_loadu_si512(xg + (b * 4 + j) * 64);
                xs[g] = _mm512_loadu_ps(reinterpret_cast<const float *>(xg + k * 8) + b * 16);
                start[g] = _mm512_loadu_si512(xg + k * 8 + blocks * 64 + b * 64);
                if constexpr (TYPE == GGML_TYPE_Q4_0) start[g] = _mm512_srai_epi32(start[g], 4);  // -8 sum
            }
#pragma GCC unroll 8
            for (int r = 0; r < ROWS; ++r) {
                const Block * block = w_row[r] + b;
                __m512i wq[4];  // weights 8 j .. 8 j + 7 as u8, in every 8-byte slot
                if constexpr (TYPE == GGML_TYPE_Q8_0) {
#pragma GCC unroll 4
                    for (int j = 0; j < 4; ++j) {
                        int64_t bytes;
                        std::memcpy(&bytes, block->values + 8 * j, sizeof(bytes));
                        wq[j] = _mm512_xor_si512(_mm512_set1_epi64(bytes), bias);
                    }
                } else {
                    // Weights 0-15 are the low nibbles of bytes 0-15, weights 16-31 the high ones.
                    const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 2
                    for (int half = 0; half < 2; ++half) {
                        int64_t bytes;
                        std::memcpy(&bytes, block->nibbles + 8 * half, sizeof(bytes));
                        const __m512i v = _mm512_set1_epi64(bytes);
                        wq[half] = _mm512_and_si512(v, low_nibbles);
                        wq[half + 2] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low_nibbles);
                    }
                }
                const __m512 w_scale = _mm512_set1_ps(_cvtsh_ss(block->scale));
#pragma GCC unroll 2
                for (int g = 0; g < GROUPS; ++g) {
                    __m512i dot = start[g];
#pragma GCC unroll 4
                    for (int j = 0; j < 4; ++j) dot = _mm512_dpbusd_epi32(dot, wq[j], xv[g][j]);
                    acc[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(w_scale, xs[g]), acc[r][g]);
                }
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int g = 0; g < GROUPS; ++g) store_group(acc[r][g], g, n_tokens, y + row, y_stride);
        }
    }
}

// The same for q4_K weights, on the same activations (rounded per block of 32, finer than
// ggml's q8_K per 256). A q4_K block's 32 nibble bytes 32 i .. 32 i + 31 hold group 2 i (low
// nibbles) and 2 i + 1 (high): each 8 bytes broadcast unpack into two runs of 8 weights, one per
// group. Per group and lane, the integer dot product times the group's scale (d * its 6-bit
// scale), minus the lane's activation sum times its minimum (dmin * its 6-bit min; the form's
// start terms are -128 times those sums), times the activations' block scale.
// 8 unsigned bytes as 8 floats.
GPTJ_AVX512_VNNI inline __m256 as_floats(uint64_t bytes) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(bytes))));
}

template <int GROUPS>
GPTJ_AVX512_VNNI void q4_k_rows(const ggml_tensor * w, const uint8_t * x, int64_t x_group_stride, int n_tokens,
                                int64_t first_row, int64_t end_row, float * y, int64_t y_stride) {
    constexpr int ROWS = GROUPS == 1 ? 4 : 2;
    const int64_t k = w->ne[0], blocks = k / 32, super_blocks = k / 256;
    const auto * w_data = static_cast<const char *>(w->data);
    const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
    const RowStripes<ROWS> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const BlockQ4_K * w_row[ROWS];
        for (int r = 0; r < ROWS; ++r) {
            w_row[r] = reinterpret_cast<const BlockQ4_K *>(w_data + stripes.row_to_read(r, pass) * w->nb[1]);
        }
        __m512 acc[ROWS][GROUPS];
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 2
            for (int g = 0; g < GROUPS; ++g) acc[r][g] = _mm512_setzero_ps();
        }
        for (int64_t sb = 0; sb < super_blocks; ++sb) {
            float group_scale[ROWS][8], group_min[ROWS][8];  // d * scale, dmin * min / 128
            for (int r = 0; r < ROWS; ++r) {
                const BlockQ4_K * block = w_row[r] + sb;
                _mm_prefetch(reinterpret_cast<const char *>(block) + kPrefetchBytes, _MM_HINT_T0);
                _mm_prefetch(reinterpret_cast<const char *>(block) + kPrefetchBytes + 64, _MM_HINT_T0);
                uint64_t scales, mins;
                q4_k_scale_min_bytes(block->scales, scales, mins);
                const __m256 d = _mm256_set1_ps(_cvtsh_ss(block->scale));
                const __m256 d_min = _mm256_set1_ps(_cvtsh_ss(block->min_scale) / 128.0f);
                _mm256_storeu_ps(group_scale[r], _mm256_mul_ps(d, as_floats(scales)));
                _mm256_storeu_ps(group_min[r], _mm256_mul_ps(d_min, as_floats(mins)));
            }
            for (int pair = 0; pair < 4; ++pair) {
                // 32-blocks of the activations: the pair's low group, then its high group.
                const int64_t b_low = sb * 8 + 2 * pair, b_high = b_low + 1;
                __m512i x_low[GROUPS][4], x_high[GROUPS][4];
                __m512 scale_low[GROUPS], scale_high[GROUPS], sums_low[GROUPS], sums_high[GROUPS];
#pragma GCC unroll 2
                for (int g = 0; g < GROUPS; ++g) {
                    const uint8_t * xg = x + g * x_group_stride;
#pragma GCC unroll 4
                    for (int j = 0; j < 4; ++j) {
                        x_low[g][j] = _mm512_loadu_si512(xg + (b_low * 4 + j) * 64);
                        x_high[g][j] = _mm512_loadu_si512(xg + (b_high * 4 + j) * 64);
                    }
                    const auto * scales = reinterpret_cast<const float *>(xg + k * 8);
                    const auto * starts = reinterpret_cast<const int32_t *>(xg + k * 8 + blocks * 64);
                    scale_low[g] = _mm512_loadu_ps(scales + b_low * 16);
                    scale_high[g] = _mm512_loadu_ps(scales + b_high * 16);
                    sums_low[g] = _mm512_cvtepi32_ps(_mm512_loadu_si512(starts + b_low * 16));
                    sums_high[g] = _mm512_cvtepi32_ps(_mm512_loadu_si512(starts + b_high * 16));
                }
#pragma GCC unroll 4
                for (int r = 0; r < ROWS; ++r) {
                    const uint8_t * nibbles = w_row[r][sb].nibbles + 32 * pair;
                    __m512i low[4], high[4];
#pragma GCC unroll 4
                    for (int j = 0; j < 4; ++j) {
                        int64_t bytes;
                        std::memcpy(&bytes, nibbles + 8 * j, sizeof(bytes));
                        const __m512i v = _mm512_set1_epi64(bytes);
                        low[j] = _mm512_and_si512(v, low_nibbles);
                        high[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low_nibbles);
                    }
                    const __m512 s_low = _mm512_set1_ps(group_scale[r][2 * pair]);
                    const __m512 s_high = _mm512_set1_ps(group_scale[r][2 * pair + 1]);
                    const __m512 m_low = _mm512_set1_ps(group_min[r][2 * pair]);
                    const __m512 m_high = _mm512_set1_ps(group_min[r][2 * pair + 1]);
#pragma GCC unroll 2
                    for (int g = 0; g < GROUPS; ++g) {
                        __m512i dot_low = _mm512_setzero_si512(), dot_high = _mm512_setzero_si512();
#pragma GCC unroll 4
                        for (int j = 0; j < 4; ++j) {
                            dot_low = _mm512_dpbusd_epi32(dot_low, low[j], x_low[g][j]);
                            dot_high = _mm512_dpbusd_epi32(dot_high, high[j], x_high[g][j]);
                        }
                        const __m512 inner_low =
                            _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_low), s_low, _mm512_mul_ps(sums_low[g], m_low));
                        const __m512 inner_high =
                            _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_high), s_high, _mm512_mul_ps(sums_high[g], m_high));
                        acc[r][g] = _mm512_fmadd_ps(inner_low, scale_low[g], acc[r][g]);
                        acc[r][g] = _mm512_fmadd_ps(inner_high, scale_high[g], acc[r][g]);
                    }
                }
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int g = 0; g < GROUPS; ++g) store_group(acc[r][g], g, n_tokens, y + row, y_stride);
        }
    }
}

}  // namespace

bool cpu_has_avx512vnni() {
    static const bool has = cpu_has_avx512f() && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vnni");
    return has;
}

bool int8_matvec_applies(const ggml_tensor * weights, bool in_plain_memory, int64_t n_tokens) {
    const ggml_type t = weights->type;
    const bool type = t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q4_K;
    const int64_t multiple = t == GGML_TYPE_Q4_K ? 256 : 32;
    return g_enabled && type && in_plain_memory && ggml_is_contiguous(weights) &&
           n_tokens >= kInt8MatvecMinTokens && n_tokens <= kInt8MatvecMaxTokens && weights->ne[0] % multiple == 0 &&
           cpu_has_avx512vnni();
}

namespace {

// Quantizes each token's activations per block of 32, symmetric, rounded to nearest (as q8_0
// does). Thread ith of nth takes a range of blocks of every token.
void quantize_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], n_tokens = x->ne[1], blocks = k / 32;
    const int64_t first = blocks * ith / nth, end = blocks * (ith + 1) / nth;
    for (int64_t group = 0; group < dst->ne[1]; ++group) {
        auto * out = static_cast<uint8_t *>(dst->data) + group * dst->nb[1];
        auto * scales = reinterpret_cast<float *>(out + k * 8);
        auto * starts = reinterpret_cast<int32_t *>(out + k * 8 + blocks * 64);
        for (int t = 0; t < kGroupTokens; ++t) {
            const int64_t token = group * kGroupTokens + t;
            const float * xt = token < n_tokens ? reinterpret_cast<const float *>(
                                                      static_cast<const char *>(x->data) + token * x->nb[1])
                                                : nullptr;
            for (int64_t b = first; b < end; ++b) {
                float amax = 0.0f;
                bool nan = false;  // std::max skips a NaN: a NaN activation must give NaN outputs, not numbers
                if (xt != nullptr) {
                    for (int i = 0; i < 32; ++i) {
                        amax = std::max(amax, std::fabs(xt[b * 32 + i]));
                        nan = nan || std::isnan(xt[b * 32 + i]);
                    }
                }
                const float scale = nan ? NAN : amax / 127.0f;
                const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
                int32_t lane_sums[2] = {0, 0};  // lane 2 t + 0 meets positions 0-3 of each 8, 2 t + 1 positions 4-7
                for (int i = 0; i < 32; ++i) {
                    const int64_t position = b * 32 + i;
                    const int rounded = xt != nullptr ? static_cast<int>(std::nearbyint(xt[position] * inverse)) : 0;
                    const int q = std::clamp(rounded, -127, 127);
                    out[position / 8 * 64 + t * 8 + position % 8] = static_cast<uint8_t>(static_cast<int8_t>(q));
                    lane_sums[position % 8 / 4] += q;
                }
                scales[b * 16 + 2 * t] = scales[b * 16 + 2 * t + 1] = scale;
                starts[b * 16 + 2 * t] = -128 * lane_sums[0];
                starts[b * 16 + 2 * t + 1] = -128 * lane_sums[1];
            }
        }
    }
}

}  // namespace

ggml_tensor * int8_activations(ggml_context * ctx, ggml_tensor * x) {
    ggml_tensor * args[] = {x};
    const int64_t groups = (x->ne[1] + kGroupTokens - 1) / kGroupTokens;
    return ggml_custom_4d(ctx, GGML_TYPE_I8, group_bytes(x->ne[0]), groups, 1, 1, args, 1, quantize_task,
                          GGML_N_TASKS_MAX, nullptr);
}

void int8_matvec_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const auto [first_row, end_row] = thread_rows(w->ne[1], ith, nth);
    if (first_row >= end_row) return;
    const auto * xq = static_cast<const uint8_t *>(x->data);
    auto * y = static_cast<float *>(dst->data);
    const int64_t y_stride = int64_t(dst->nb[1] / sizeof(float));
    const int n_tokens = static_cast<int>(dst->ne[1]);
    const bool one_group = n_tokens <= kGroupTokens;
    auto * rows = w->type == GGML_TYPE_Q8_0   ? (one_group ? quantized_rows<GGML_TYPE_Q8_0, 1> : quantized_rows<GGML_TYPE_Q8_0, 2>)
                  : w->type == GGML_TYPE_Q4_K ? (one_group ? q4_k_rows<1> : q4_k_rows<2>)
                                              : (one_group ? quantized_rows<GGML_TYPE_Q4_0, 1> : quantized_rows<GGML_TYPE_Q4_0, 2>);
    rows(w, xq, int64_t(x->nb[1]), n_tokens, first_row, end_row, y, y_stride);
}

}  // namespace gptj

#else

namespace gptj {
bool cpu_has_avx512vnni() { return false; }
bool int8_matvec_applies(const ggml_tensor *, bool, int64_t) { return false; }
ggml_tensor * int8_activations(ggml_context *, ggml_tensor * x) { return x; }  // never called: applies() is false
void int8_matvec_task(ggml_tensor *, int, int, void *) {}
}  // namespace gptj

#endif
