#include "gptj/kernels/matvec_int8_token.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "gptj/kernels/matvec.h"
#include "gptj/kernels/matvec_int8.h"
#include "gptj/kernels/quant_blocks.h"
#include "gptj/kernels/row_stripes.h"

namespace gptj {
namespace {

// The activations' form, one ggml row per token: the k values round(x / scale) (scale = max |x|
// / 127 per block of 32, so |q| <= 127) in the order the kernel reads them, then per unit (the
// weights one zmm of weight bytes covers) 16 floats, each lane's block scale, then per unit 16
// int32, the bias term each lane's dot product starts from.
// - q8_0, units of 64 (two blocks): values in order; lanes 0-7 take block 0, 8-15 block 1. The
//   weights go into vpdpbusd as u8 = w + 128 (an xor), so lanes 0 and 8 start at -128 * their
//   block's sum of values.
// - q4_0, units of 128 (four blocks): the first 16 values of each block, then the last 16 of
//   each, as the four blocks' 64 nibble bytes unpack (low nibbles, then high); lanes 4j-4j+3 take
//   block j, and lane 4j starts at -8 * its sum (the weights are their nibbles minus 8).
// - q4_K and q5_K, units of 256 (one block, one scale max |x| / 127 over all 256): per half of 128, the
//   values of its groups 0, 2, 1, 3 of 32 (a q4_K block's 64 bytes of nibbles hold groups 0 and 2
//   in their low nibbles, 1 and 3 in the high ones); the unit's 128 bytes hold the scale (first
//   float) and, from byte 64, the sums of the 8 groups' values as int16 (the minimums meet them).
// - q6_K, units of 256 (one block, one scale over all 256, as ggml's q8_K): values in order (a q6_K
//   block unpacks 64 weights at a time in order); the unit's 128 bytes hold the scale (first float)
//   and, from byte 64, the sums of its 16 groups of 16 values as int16 (the -32 offset meets them).
enum class Form { pairs_of32, quads_of32, of256, of256_by16 };

Form form_for(ggml_type type) {
    switch (type) {
        case GGML_TYPE_Q6_K: return Form::of256_by16;
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K: return Form::of256;
        case GGML_TYPE_Q4_0: return Form::quads_of32;
        default: return Form::pairs_of32;
    }
}
int64_t unit_weights(Form form) {
    return form == Form::of256 || form == Form::of256_by16 ? 256 : form == Form::quads_of32 ? 128 : 64;
}
int64_t row_bytes(Form form, int64_t k) { return k + k / unit_weights(form) * 128; }

// The quantize op's userdata: which form to write (addresses of constants, never written).
constexpr Form kForms[] = {Form::pairs_of32, Form::quads_of32, Form::of256, Form::of256_by16};

}  // namespace
}  // namespace gptj

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define GPTJ_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,f16c,fma")))

// GCC 12 reports the undefined pass-through operand inside its own AVX-512 intrinsics
// (_mm512_max_ps, _mm512_cvtps_epi32, _mm512_broadcast_i32x4, ...) as uninitialized once they
// are inlined here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace gptj {
namespace {

// Unaligned loads from byte addresses.
GPTJ_VNNI inline __m128i load128(const void * p) { return _mm_loadu_si128(static_cast<const __m128i *>(p)); }
GPTJ_VNNI inline __m256i load256(const void * p) { return _mm256_loadu_si256(static_cast<const __m256i *>(p)); }

// Prefetch distance in each row's stream, as in matvec.cpp (1024 measured no different).
constexpr int64_t kPrefetchBytes = 512;

// Rows per block of a batch of more than 4 tokens, taken 4 tokens per pass while the block is in
// L2 (64 rows of 4096 q6_K weights: 210 KiB).
constexpr int64_t kPassRows = 64;
// Rows at a time for one token: memory streams in flight per thread, each activation vector
// loaded serving all; fewer for more tokens, whose accumulators fill the registers.
template <int TOKENS>
constexpr int rows_for() {
    return TOKENS == 1 ? 4 : TOKENS == 2 ? 3 : 2;
}

// y[t][row] = dot(w_row, x_t) for rows [first_row, end_row) and TOKENS tokens (activation rows
// x_stride bytes apart): each unit of weights is unpacked once for all of them.
template <ggml_type TYPE, int TOKENS>
GPTJ_VNNI void token_rows(const ggml_tensor * w, const uint8_t * x, int64_t x_stride, int64_t first_row,
                          int64_t end_row, float * y, int64_t y_stride) {
    constexpr bool kQ8 = TYPE == GGML_TYPE_Q8_0;
    constexpr int kRows = rows_for<TOKENS>();
    constexpr int64_t kUnit = kQ8 ? 64 : 128, kUnitBytes = kQ8 ? 2 * sizeof(BlockQ8_0) : 4 * sizeof(BlockQ4_0);
    const int64_t k = w->ne[0], units = k / kUnit;
    const auto * w_data = static_cast<const char *>(w->data);
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80)), low_nibbles = _mm512_set1_epi8(0x0F);
    // Word indices of the blocks' f16 scales within a unit's first 64 bytes, each repeated over
    // its block's lanes: q8_0's blocks are 17 words apart, q4_0's 9.
    alignas(64) static constexpr int16_t kQ8Words[32] = {0, 0, 0, 0, 0, 0, 0, 0, 17, 17, 17, 17, 17, 17, 17, 17};
    alignas(64) static constexpr int16_t kQ4Words[32] = {0, 0, 0, 0, 9, 9, 9, 9, 18, 18, 18, 18, 27, 27, 27, 27};
    const __m512i scale_words = _mm512_load_si512(kQ8 ? kQ8Words : kQ4Words);
    const RowStripes<kRows> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const char * w_row[kRows];
        for (int r = 0; r < kRows; ++r) w_row[r] = w_data + stripes.row_to_read(r, pass) * w->nb[1];
        __m512 acc[kRows][TOKENS];
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm512_setzero_ps();
        }
        for (int64_t u = 0; u < units; ++u) {
            // The tokens' activations for this unit, loaded once for all the rows.
            __m512 x_scales[TOKENS];
            __m512i starts[TOKENS], x_low[TOKENS], x_high[TOKENS];
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) {
                const uint8_t * xt = x + t * x_stride;
                x_scales[t] = _mm512_loadu_ps(reinterpret_cast<const float *>(xt + k) + 16 * u);
                starts[t] = _mm512_loadu_si512(reinterpret_cast<const int32_t *>(xt + k + units * 64) + 16 * u);
                x_low[t] = _mm512_loadu_si512(xt + u * kUnit);
                x_high[t] = kQ8 ? x_low[t] : _mm512_loadu_si512(xt + u * kUnit + 64);
            }
#pragma GCC unroll 4
            for (int r = 0; r < kRows; ++r) {
                const char * unit = w_row[r] + u * kUnitBytes;
                _mm_prefetch(unit + kPrefetchBytes, _MM_HINT_T0);
                __m512i first, second;  // weights as u8: q8_0's (xor 0x80), q4_0's low and high nibbles
                if constexpr (kQ8) {
                    const __m512i values = _mm512_inserti64x4(
                        _mm512_zextsi256_si512(load256(unit + 2)),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(unit + sizeof(BlockQ8_0) + 2)), 1);
                    first = second = _mm512_xor_si512(values, bias);
                } else {
                    __m512i nibbles = _mm512_zextsi128_si512(load128(unit + 2));
                    nibbles = _mm512_inserti32x4(nibbles, load128(unit + 20), 1);
                    nibbles = _mm512_inserti32x4(nibbles, load128(unit + 38), 2);
                    nibbles = _mm512_inserti32x4(nibbles, load128(unit + 56), 3);
                    first = _mm512_and_si512(nibbles, low_nibbles);
                    second = _mm512_and_si512(_mm512_srli_epi16(nibbles, 4), low_nibbles);
                }
                const __m512i scale_bits = _mm512_permutexvar_epi16(scale_words, _mm512_loadu_si512(unit));
                const __m512 w_scales = _mm512_cvtph_ps(_mm512_castsi512_si256(scale_bits));
#pragma GCC unroll 4
                for (int t = 0; t < TOKENS; ++t) {
                    __m512i dot = _mm512_dpbusd_epi32(starts[t], first, x_low[t]);
                    if constexpr (!kQ8) dot = _mm512_dpbusd_epi32(dot, second, x_high[t]);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(w_scales, x_scales[t]), acc[r][t]);
                }
            }
        }
        for (int r = 0; r < kRows; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int t = 0; t < TOKENS; ++t) y[t * y_stride + row] = _mm512_reduce_add_ps(acc[r][t]);
        }
    }
}

// A q4_K block's 8 group scales and minimums (6 bits each) as int16 (quant_blocks.h).
GPTJ_VNNI inline void q4_k_scales_mins(const uint8_t * packed, __m128i & scales, __m128i & mins) {
    uint64_t scale_bytes, min_bytes;
    q4_k_scale_min_bytes(packed, scale_bytes, min_bytes);
    scales = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(scale_bytes)));
    mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(min_bytes)));
}

// The same for q4_K weights. Per half block (64 nibble bytes, 128 weights), vpmaddubsw multiplies
// the low and the high nibbles by their activations into int16 pairs (at most 2 * 15 * 127), and
// vpdpwssd adds them up times each lane's 6-bit group scale (spread over the lanes by vpshufb):
// the block's scaled sum stays exact in int32, times the f16 scale and the activations' scale
// once per block; the minimums meet the activations' group sums in 4 int32 lanes.
// q5_K (TYPE) is q4_K with each weight's fifth bit from `high`, broadcast to both 256-bit halves
// and shifted per half into bit 4 of its byte.
template <ggml_type TYPE, int TOKENS>
GPTJ_VNNI void q4_k_token_rows(const ggml_tensor * w, const uint8_t * x, int64_t x_stride, int64_t first_row,
                               int64_t end_row, float * y, int64_t y_stride) {
    using Block = std::conditional_t<TYPE == GGML_TYPE_Q5_K, BlockQ5_K, BlockQ4_K>;
    constexpr int kRows = rows_for<TOKENS>();
    const int64_t k = w->ne[0], blocks = k / 256;
    const auto * w_data = static_cast<const char *>(w->data);
    const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
    // vpshufb controls spreading the 8 group scales (int16, repeated in every 128-bit lane) over
    // the lanes: lanes 0-7 and 8-15 of half h's low nibbles take groups 4h and 4h + 2, its high
    // nibbles 4h + 1 and 4h + 3. One in-lane byte shuffle each (vpermw costs two uops).
    __m512i group_bytes[4];
    for (int i = 0; i < 4; ++i) {
        const int first = 4 * (i / 2) + i % 2, second = first + 2;
        group_bytes[i] = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<short>(0x0100 + 0x0202 * first)),
                                            _mm256_set1_epi16(static_cast<short>(0x0100 + 0x0202 * second)), 1);
    }
    const RowStripes<kRows> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const Block * w_row[kRows];
        for (int r = 0; r < kRows; ++r) {
            w_row[r] = reinterpret_cast<const Block *>(w_data + stripes.row_to_read(r, pass) * w->nb[1]);
        }
        __m512 acc[kRows][TOKENS];
        __m128 acc_min[kRows][TOKENS];
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) {
                acc[r][t] = _mm512_setzero_ps();
                acc_min[r][t] = _mm_setzero_ps();
            }
        }
        for (int64_t b = 0; b < blocks; ++b) {
#pragma GCC unroll 4
            for (int r = 0; r < kRows; ++r) {
                const Block * block = w_row[r] + b;
                const char * ahead = reinterpret_cast<const char *>(block) + kPrefetchBytes;
                constexpr int kLines = static_cast<int>((sizeof(Block) + 63) / 64);
                for (int line = 0; line < kLines; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
                __m128i scales, mins;
                q4_k_scales_mins(block->scales, scales, mins);
                const __m512i scales_wide = _mm512_broadcast_i32x4(scales);
                __m512i nibble_halves[4];  // low and high nibbles of each half block
#pragma GCC unroll 2
                for (int h = 0; h < 2; ++h) {
                    const __m512i nibbles = _mm512_loadu_si512(block->nibbles + 64 * h);
                    nibble_halves[2 * h] = _mm512_and_si512(nibbles, low_nibbles);
                    nibble_halves[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(nibbles, 4), low_nibbles);
                }
                if constexpr (TYPE == GGML_TYPE_Q5_K) {
                    // Byte l of the low nibbles of half h holds group 4h's weight (bytes 0-31) or
                    // 4h + 2's (32-63): bits 4h and 4h + 2 of high[l]; the high nibbles 4h + 1, 4h + 3.
                    const __m512i high = _mm512_broadcast_i64x4(load256(block->high));
                    const __m512i fifth = _mm512_set1_epi8(0x10);
                    const __m512i shifts[4] = {
                        _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1),  // half 0, low: left
                        _mm512_inserti64x4(_mm512_set1_epi16(3), _mm256_set1_epi16(1), 1),  // half 0, high: left
                        _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1),  // half 1, low: right
                        _mm512_inserti64x4(_mm512_set1_epi16(1), _mm256_set1_epi16(3), 1),  // half 1, high: right
                    };
                    for (int i = 0; i < 4; ++i) {
                        const __m512i bit = i < 2 ? _mm512_sllv_epi16(high, shifts[i]) : _mm512_srlv_epi16(high, shifts[i]);
                        nibble_halves[i] = _mm512_or_si512(nibble_halves[i], _mm512_and_si512(bit, fifth));
                    }
                }
                __m512i lane_scales[4];
#pragma GCC unroll 4
                for (int i = 0; i < 4; ++i) lane_scales[i] = _mm512_shuffle_epi8(scales_wide, group_bytes[i]);
                const float d = _cvtsh_ss(block->scale), d_min = _cvtsh_ss(block->min_scale);
#pragma GCC unroll 4
                for (int t = 0; t < TOKENS; ++t) {
                    const uint8_t * xb = x + t * x_stride + b * 256;
                    const uint8_t * tail = x + t * x_stride + k + b * 128;
                    float x_scale;
                    std::memcpy(&x_scale, tail, sizeof x_scale);
                    __m512i sum = _mm512_setzero_si512();
#pragma GCC unroll 4
                    for (int i = 0; i < 4; ++i) {
                        const __m512i pairs = _mm512_maddubs_epi16(nibble_halves[i], _mm512_loadu_si512(xb + 64 * i));
                        sum = _mm512_dpwssd_epi32(sum, pairs, lane_scales[i]);
                    }
                    const __m128i group_sums = load128(tail + 64);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(d * x_scale), acc[r][t]);
                    acc_min[r][t] = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_madd_epi16(mins, group_sums)),
                                                 _mm_set1_ps(d_min * x_scale), acc_min[r][t]);
                }
            }
        }
        for (int r = 0; r < kRows; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int t = 0; t < TOKENS; ++t) {
                alignas(16) float mins[4];
                _mm_store_ps(mins, acc_min[r][t]);
                y[t * y_stride + row] = _mm512_reduce_add_ps(acc[r][t]) - ((mins[0] + mins[1]) + (mins[2] + mins[3]));
            }
        }
    }
}

// The same for q6_K weights. Per half block, one zmm of `low` bytes gives weights 0-63 (low nibbles)
// and 64-127 (high nibbles) in order, each completed by its 2 bits of `high` (broadcast to both
// 256-bit halves, shifted per half into bits 4-5); vpmaddubsw multiplies the 6-bit values by their
// activations into int16 pairs (at most 2 * 63 * 127), vpdpwssd adds them up times each lane's
// group scale (a 128-bit lane per group of 16, spread by vpshufb): exact in int32 per block. The
// -32 offset is the group sums times the scales, one vpmaddwd per block and token.
template <int TOKENS>
GPTJ_VNNI void q6_k_token_rows(const ggml_tensor * w, const uint8_t * x, int64_t x_stride, int64_t first_row,
                               int64_t end_row, float * y, int64_t y_stride) {
    constexpr int kRows = rows_for<TOKENS>();
    const int64_t k = w->ne[0], blocks = k / 256;
    const auto * w_data = static_cast<const char *>(w->data);
    const __m512i low_nibbles = _mm512_set1_epi8(0x0F), top_bits = _mm512_set1_epi8(0x30);
    // Per 16-bit lane: the shifts that put `high`'s 2 bits of the low-nibble weights (bits 0-1 for
    // bytes 0-31, 2-3 for 32-63) and of the high-nibble weights (4-5, 6-7) into bits 4-5.
    const __m512i low_shifts = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i high_shifts = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    // vpshufb controls: 128-bit lane l takes word l (groups 4 h' + l) or word 4 + l of 8 scales.
    __m512i first_words, last_words;
    {
        alignas(64) uint8_t first[64], last[64];
        for (int i = 0; i < 64; ++i) {
            const int lane = i / 16, byte = i % 2;
            first[i] = static_cast<uint8_t>(2 * lane + byte);
            last[i] = static_cast<uint8_t>(2 * (4 + lane) + byte);
        }
        first_words = _mm512_load_si512(first);
        last_words = _mm512_load_si512(last);
    }
    const RowStripes<kRows> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const BlockQ6_K * w_row[kRows];
        for (int r = 0; r < kRows; ++r) {
            w_row[r] = reinterpret_cast<const BlockQ6_K *>(w_data + stripes.row_to_read(r, pass) * w->nb[1]);
        }
        __m512 acc[kRows][TOKENS];
        __m256 acc_offset[kRows][TOKENS];
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) {
                acc[r][t] = _mm512_setzero_ps();
                acc_offset[r][t] = _mm256_setzero_ps();
            }
        }
        for (int64_t b = 0; b < blocks; ++b) {
#pragma GCC unroll 4
            for (int r = 0; r < kRows; ++r) {
                const BlockQ6_K * block = w_row[r] + b;
                const char * ahead = reinterpret_cast<const char *>(block) + kPrefetchBytes;
                for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
                const __m256i scales16 = _mm256_cvtepi8_epi16(load128(block->scales));
                const __m512i scales_first = _mm512_broadcast_i32x4(_mm256_castsi256_si128(scales16));
                const __m512i scales_second = _mm512_broadcast_i32x4(_mm256_extracti128_si256(scales16, 1));
                __m512i values[4], lane_scales[4];  // per half: weights 0-63, then 64-127
#pragma GCC unroll 2
                for (int h = 0; h < 2; ++h) {
                    const __m512i low = _mm512_loadu_si512(block->low + 64 * h);
                    const __m512i high = _mm512_broadcast_i64x4(load256(block->high + 32 * h));
                    values[2 * h] = _mm512_or_si512(_mm512_and_si512(low, low_nibbles),
                                                    _mm512_and_si512(_mm512_sllv_epi16(high, low_shifts), top_bits));
                    values[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(low, 4), low_nibbles),
                                                        _mm512_and_si512(_mm512_srlv_epi16(high, high_shifts), top_bits));
                    const __m512i scales = h == 0 ? scales_first : scales_second;
                    lane_scales[2 * h] = _mm512_shuffle_epi8(scales, first_words);
                    lane_scales[2 * h + 1] = _mm512_shuffle_epi8(scales, last_words);
                }
                const float d = _cvtsh_ss(block->scale);
#pragma GCC unroll 4
                for (int t = 0; t < TOKENS; ++t) {
                    const uint8_t * xb = x + t * x_stride + b * 256;
                    const uint8_t * tail = x + t * x_stride + k + b * 128;
                    float x_scale;
                    std::memcpy(&x_scale, tail, sizeof x_scale);
                    __m512i sum = _mm512_setzero_si512();
#pragma GCC unroll 4
                    for (int i = 0; i < 4; ++i) {
                        const __m512i pairs = _mm512_maddubs_epi16(values[i], _mm512_loadu_si512(xb + 64 * i));
                        sum = _mm512_dpwssd_epi32(sum, pairs, lane_scales[i]);
                    }
                    const __m256i group_sums = load256(tail + 64);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(d * x_scale), acc[r][t]);
                    acc_offset[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(scales16, group_sums)),
                                                       _mm256_set1_ps(-32.0f * d * x_scale), acc_offset[r][t]);
                }
            }
        }
        for (int r = 0; r < kRows; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int t = 0; t < TOKENS; ++t) {
                alignas(32) float offsets[8];
                _mm256_store_ps(offsets, acc_offset[r][t]);
                float offset = 0.0f;
                for (float o : offsets) offset += o;
                y[t * y_stride + row] = _mm512_reduce_add_ps(acc[r][t]) + offset;
            }
        }
    }
}

// max |x| over n floats (n a multiple of 32); NaN if any is NaN, so that a NaN activation gives
// NaN outputs (as the f32 kernels' would be) instead of integers that look like numbers.
GPTJ_VNNI float max_magnitude(const float * x, int64_t n) {
    __m512 amax = _mm512_setzero_ps();
    __mmask16 nan = 0;
    for (int64_t i = 0; i < n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
    }
    return nan != 0 ? NAN : _mm512_reduce_max_ps(amax);
}

// Rounds 32 activations times `inverse` to 8 bits (|q| <= 127), stored in two runs of 16;
// returns their sum.
GPTJ_VNNI int round_32(const float * x, float inverse, int8_t * first16, int8_t * last16) {
    const __m512 by = _mm512_set1_ps(inverse);
    const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x), by));
    const __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16), by));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(first16), _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(last16), _mm512_cvtsepi32_epi8(qb));
    return _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
}

// The inverse of scale = amax / 127 (0 for an all-zero block; a NaN scale stays NaN).
inline float inverse_of(float amax) { return amax > 0.0f ? 127.0f / amax : 0.0f; }

// Writes the form `userdata` names (the layouts above), one row per token. Thread ith of nth
// takes a range of the (token, unit) pairs.
GPTJ_VNNI void quantize_task(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const Form form = *static_cast<const Form *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], unit = unit_weights(form), units = k / unit, blocks = unit / 32;
    const int64_t jobs = units * x->ne[1];
    for (int64_t job = jobs * ith / nth; job < jobs * (ith + 1) / nth; ++job) {
        const int64_t token = job / units, u = job % units;
        const auto * xf = reinterpret_cast<const float *>(static_cast<const char *>(x->data) + token * x->nb[1]);
        auto * out = static_cast<uint8_t *>(dst->data) + token * dst->nb[1];
        auto * lane_scales = reinterpret_cast<float *>(out + k);
        auto * lane_starts = reinterpret_cast<int32_t *>(out + k + units * 64);
        auto * values = reinterpret_cast<int8_t *>(out + u * unit);
        const float * xu = xf + u * unit;
        if (form == Form::of256_by16) {
            auto * tail = out + k + u * 128;
            const float amax = max_magnitude(xu, 256), scale = amax / 127.0f;
            std::memcpy(tail, &scale, sizeof scale);
            for (int g = 0; g < 8; ++g) {
                int8_t * dest = values + 32 * g;
                round_32(xu + 32 * g, inverse_of(amax), dest, dest + 16);
                for (int half = 0; half < 2; ++half) {  // the sums of each 16 (|sum| <= 16 * 127)
                    int sum = 0;
                    for (int i = 0; i < 16; ++i) sum += dest[16 * half + i];
                    const auto sum16 = static_cast<int16_t>(sum);
                    std::memcpy(tail + 64 + 2 * (2 * g + half), &sum16, sizeof sum16);
                }
            }
            continue;
        }
        if (form == Form::of256) {
            auto * tail = out + k + u * 128;
            const float amax = max_magnitude(xu, 256), scale = amax / 127.0f;
            std::memcpy(tail, &scale, sizeof scale);
            for (int g = 0; g < 8; ++g) {
                // Group g's place: half g / 4; within it groups 0, 2, 1, 3.
                static constexpr int kSlot[4] = {0, 2, 1, 3};
                int8_t * dest = values + 128 * (g / 4) + 32 * kSlot[g % 4];
                const auto sum = static_cast<int16_t>(round_32(xu + 32 * g, inverse_of(amax), dest, dest + 16));
                std::memcpy(tail + 64 + 2 * g, &sum, sizeof sum);  // |sum| <= 32 * 127
            }
            continue;
        }
        const int lanes = 16 / static_cast<int>(blocks);
        for (int64_t j = 0; j < blocks; ++j) {
            const float amax = max_magnitude(xu + 32 * j, 32), scale = amax / 127.0f;
            // q8_0: block j's 32 values in order; q4_0: its first 16 at 16 j, its last 16 at 64 + 16 j.
            int8_t * first16 = form == Form::pairs_of32 ? values + 32 * j : values + 16 * j;
            int8_t * last16 = form == Form::pairs_of32 ? first16 + 16 : values + 64 + 16 * j;
            const int sum = round_32(xu + 32 * j, inverse_of(amax), first16, last16);
            for (int lane = 0; lane < lanes; ++lane) {
                lane_scales[16 * u + j * lanes + lane] = scale;
                lane_starts[16 * u + j * lanes + lane] = lane == 0 ? (form == Form::pairs_of32 ? -128 : -8) * sum : 0;
            }
        }
    }
}

}  // namespace

bool int8_token_applies(const ggml_tensor * weights, bool in_plain_memory, int64_t n_tokens) {
    const ggml_type type = weights->type;
    const bool handled = type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_K ||
                         type == GGML_TYPE_Q5_K || type == GGML_TYPE_Q6_K;
    // Batches the 8-token-slot kernel does not take (q5_K, q6_K) come here, in passes of 4 tokens.
    const bool tokens_here =
        n_tokens <= kInt8TokenMaxTokens ||
        (n_tokens <= kInt8TokenBatchMaxTokens && !int8_matvec_applies(weights, in_plain_memory, n_tokens));
    return handled && n_tokens >= 1 && tokens_here && in_plain_memory &&
           ggml_is_contiguous(weights) && weights->ne[0] % unit_weights(form_for(type)) == 0 && int8_matvec_enabled() &&
           cpu_has_avx512vnni();
}

int int8_token_form(ggml_type weight_type) { return static_cast<int>(form_for(weight_type)); }

ggml_tensor * int8_token_activations(ggml_context * ctx, ggml_tensor * x, ggml_type weight_type) {
    ggml_tensor * args[] = {x};
    const Form form = form_for(weight_type);
    void * userdata = const_cast<Form *>(&kForms[static_cast<int>(form)]);
    return ggml_custom_4d(ctx, GGML_TYPE_I8, row_bytes(form, x->ne[0]), x->ne[1], 1, 1, args, 1, quantize_task,
                          GGML_N_TASKS_MAX, userdata);
}

namespace {

using RowsKernel = void (*)(const ggml_tensor *, const uint8_t *, int64_t, int64_t, int64_t, float *, int64_t);

template <int TOKENS>
RowsKernel pick_type(ggml_type type) {
    switch (type) {
        case GGML_TYPE_Q8_0: return token_rows<GGML_TYPE_Q8_0, TOKENS>;
        case GGML_TYPE_Q4_0: return token_rows<GGML_TYPE_Q4_0, TOKENS>;
        case GGML_TYPE_Q4_K: return q4_k_token_rows<GGML_TYPE_Q4_K, TOKENS>;
        case GGML_TYPE_Q5_K: return q4_k_token_rows<GGML_TYPE_Q5_K, TOKENS>;
        default: return q6_k_token_rows<TOKENS>;  // int8_token_applies admits no other
    }
}

RowsKernel pick(ggml_type type, int64_t n_tokens) {
    static_assert(kInt8TokenMaxTokens == 4, "the dispatch below covers 1..4 tokens");
    switch (n_tokens) {
        case 1: return pick_type<1>(type);
        case 2: return pick_type<2>(type);
        case 3: return pick_type<3>(type);
        default: return pick_type<4>(type);
    }
}

}  // namespace

void int8_token_matvec_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const auto [first_row, end_row] = thread_rows(w->ne[1], ith, nth);
    if (first_row >= end_row) return;
    const auto * xq = static_cast<const uint8_t *>(x->data);
    const auto x_stride = static_cast<int64_t>(x->nb[1]);
    auto * y = static_cast<float *>(dst->data);
    const auto y_stride = static_cast<int64_t>(dst->nb[1] / sizeof(float));
    in_passes(first_row, end_row, static_cast<int>(dst->ne[1]), kInt8TokenMaxTokens, kPassRows,
              [&](int64_t first, int64_t end, int t, int tokens) {
                  pick(w->type, tokens)(w, xq + t * x_stride, x_stride, first, end, y + t * y_stride, y_stride);
              });
}

}  // namespace gptj

#else

namespace gptj {
bool int8_token_applies(const ggml_tensor *, bool, int64_t) { return false; }
int int8_token_form(ggml_type) { return 0; }
ggml_tensor * int8_token_activations(ggml_context *, ggml_tensor * x, ggml_type) { return x; }  // never called
void int8_token_matvec_task(ggml_tensor *, int, int, void *) {}
}  // namespace gptj

#endif
