#include "gptj/kernels/matvec_int8_avx2.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "gptj/kernels/dequantize.h"
#include "gptj/kernels/isa.h"
#include "gptj/kernels/matvec.h"
#include "gptj/kernels/quant_blocks.h"
#include "gptj/kernels/row_stripes.h"

namespace gptj {
namespace {

// The activations' 8-bit forms, one ggml row per token. Values are round(x / scale) with
// scale = max |x| / 127 over a block, so |q| <= 127.
// - for q8_0 weights ("blocks of 32"): k int8 values, then a float scale per 32;
// - for q4_0 weights ("pairs of blocks of 32", k a multiple of 64): per pair of blocks, 64 values
//   ordered as the nibbles of the two weight blocks unpack side by side (the first 16 values of
//   each block, then the last 16 of each); after the k values, per pair, the two scales each
//   repeated 4 times (8 floats, one per lane of the int32 dot products: lanes 0-3 sum the first
//   block, 4-7 the second) and -8 times each block's sum of values in lanes 0 and 4 (8 int32:
//   q4_0's weights are their nibbles minus 8);
// - for q4_K weights ("blocks of 256"): k int8 values, a float scale per 256, then the sum of
//   each 32 values as int16 (the q4_K minimums multiply those sums).
// - for q6_K weights ("blocks of 256, sums of 16"): k int8 values, a float scale per 256, then
//   the sum of each 16 values as int16 (the q6_K offset of -32 multiplies those sums).
enum class Form { of32, pairs_of32, of256, of256_by16 };

Form form_for(ggml_type weight_type) {
    const bool k_quant = weight_type == GGML_TYPE_Q4_K || weight_type == GGML_TYPE_Q5_K;
    if (weight_type == GGML_TYPE_Q6_K) return Form::of256_by16;
    return k_quant ? Form::of256 : weight_type == GGML_TYPE_Q4_0 ? Form::pairs_of32 : Form::of32;
}

int64_t activation_row_bytes(Form form, int64_t k) {
    switch (form) {
        case Form::of32: return k + k / 32 * 4;
        case Form::pairs_of32: return k + k / 64 * 64;
        case Form::of256_by16: return k + k / 256 * 4 + k / 16 * 2;
        default: return k + k / 256 * 4 + k / 32 * 2;
    }
}

// The multiple of which a row's length must be.
int64_t row_multiple(ggml_type type) {
    const bool k_quant = type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q5_K || type == GGML_TYPE_Q6_K;
    return k_quant ? 256 : type == GGML_TYPE_Q4_0 ? 64 : 32;
}

// The quantize op's userdata: which form to write (addresses of constants, never written).
constexpr Form kForms[] = {Form::of32, Form::pairs_of32, Form::of256, Form::of256_by16};

}  // namespace
}  // namespace gptj

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "gptj/kernels/avx2.h"

namespace gptj {
namespace {

// Prefetch distance in each row's stream (on top of the hardware prefetchers), as in matvec.cpp.
constexpr int64_t kPrefetchBytes = 512;
// Tokens multiplied in one pass over the weights; more take a pass per kPassTokens over each
// block of kPassRows rows while it is in L2 (64 rows of 4096 q8_0 weights: 272 KiB).
constexpr int kPassTokens = 4;
constexpr int64_t kPassRows = 64;

using avx2::horizontal_sum;
using avx2::max_magnitude;
using avx2::round_32;

// sum(w * x) of 32 signed bytes, in 8 int32 lanes. vpmaddubsw multiplies unsigned by signed
// bytes, so it takes |w| and x with w's sign; with |w| <= 128 and |x| <= 127 its pairwise
// int16 sums (at most 2 * 128 * 127) do not saturate.
GPTJ_AVX2_INLINE __m256i dot_signed(__m256i w, __m256i x) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// An f16 scale times a float, in all 8 lanes.
GPTJ_AVX2_INLINE __m256 scale_product(ggml_fp16_t half, __m256 other) {
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(half))), other);
}

// y[t][row] = dot(w_row, x_t) for TOKENS tokens, ROWS rows at a time, one from each of ROWS stripes
// (row_stripes.h) (ROWS memory streams in flight; each activation vector loaded serves ROWS rows),
// q8_0 weights.
template <int ROWS, int TOKENS>
GPTJ_AVX2 void rows_of_q8_0(const ggml_tensor * w, const uint8_t * x, int64_t x_stride, int64_t first_row,
                            int64_t end_row, float * y, int64_t y_stride) {
    const int64_t k = w->ne[0], blocks = k / 32;
    const auto * w_data = static_cast<const char *>(w->data);
    const float * x_scales[TOKENS];
    for (int t = 0; t < TOKENS; ++t) x_scales[t] = reinterpret_cast<const float *>(x + t * x_stride + k);
    const RowStripes<ROWS> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const BlockQ8_0 * w_row[ROWS];
        for (int r = 0; r < ROWS; ++r) {
            w_row[r] = reinterpret_cast<const BlockQ8_0 *>(w_data + stripes.row_to_read(r, pass) * w->nb[1]);
        }
        __m256 acc[ROWS][TOKENS];
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm256_setzero_ps();
        }
        for (int64_t b = 0; b < blocks; ++b) {
            if (b % 2 == 0) {
#pragma GCC unroll 4
                for (int r = 0; r < ROWS; ++r) {
                    _mm_prefetch(reinterpret_cast<const char *>(w_row[r] + b) + kPrefetchBytes, _MM_HINT_T0);
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) {
                const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + t * x_stride + b * 32));
                const __m256 x_scale = _mm256_broadcast_ss(x_scales[t] + b);
#pragma GCC unroll 4
                for (int r = 0; r < ROWS; ++r) {
                    const BlockQ8_0 * block = w_row[r] + b;
                    const __m256i weights = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(block->values));
                    const __m256 dot = _mm256_cvtepi32_ps(dot_signed(weights, xv));
                    acc[r][t] = _mm256_fmadd_ps(dot, scale_product(block->scale, x_scale), acc[r][t]);
                }
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int t = 0; t < TOKENS; ++t) y[t * y_stride + row] = horizontal_sum(acc[r][t]);
        }
    }
}

// The same for q4_0 weights, two blocks at a time: their 32 nibble bytes side by side in one
// register unpack into two registers of 32 unsigned weights (plus 8) with 3 instructions, which
// vpmaddubsw takes as they are (nibble times value pairs stay far from int16's limit); the -8 is
// the activations' precomputed sum term.
template <int ROWS, int TOKENS>
GPTJ_AVX2 void rows_of_q4_0(const ggml_tensor * w, const uint8_t * x, int64_t x_stride, int64_t first_row,
                            int64_t end_row, float * y, int64_t y_stride) {
    const int64_t k = w->ne[0], pairs = k / 64;
    const auto * w_data = static_cast<const char *>(w->data);
    const __m256i low_nibbles = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256i pair_lanes = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const RowStripes<ROWS> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const BlockQ4_0 * w_row[ROWS];
        for (int r = 0; r < ROWS; ++r) {
            w_row[r] = reinterpret_cast<const BlockQ4_0 *>(w_data + stripes.row_to_read(r, pass) * w->nb[1]);
        }
        __m256 acc[ROWS][TOKENS];
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm256_setzero_ps();
        }
        for (int64_t p = 0; p < pairs; ++p) {
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                _mm_prefetch(reinterpret_cast<const char *>(w_row[r] + 2 * p) + kPrefetchBytes, _MM_HINT_T0);
            }
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                const BlockQ4_0 * first = w_row[r] + 2 * p;
                const __m256i packed = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(first->nibbles))),
                    _mm_loadu_si128(reinterpret_cast<const __m128i *>(first[1].nibbles)), 1);
                const __m256i low = _mm256_and_si256(packed, low_nibbles);
                const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_nibbles);
                const uint32_t two_scales = uint32_t(first->scale) | uint32_t(first[1].scale) << 16;
                const __m256 w_scales = _mm256_permutevar8x32_ps(
                    _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(two_scales)))), pair_lanes);
#pragma GCC unroll 4
                for (int t = 0; t < TOKENS; ++t) {
                    const uint8_t * xp = x + t * x_stride + p * 64;
                    const uint8_t * tail = x + t * x_stride + k + p * 64;
                    const __m256i sums = _mm256_add_epi16(
                        _mm256_maddubs_epi16(low, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xp))),
                        _mm256_maddubs_epi16(high, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xp + 32))));
                    const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(sums, ones),
                                                         _mm256_loadu_si256(reinterpret_cast<const __m256i *>(tail + 32)));
                    const __m256 scales = _mm256_mul_ps(w_scales, _mm256_loadu_ps(reinterpret_cast<const float *>(tail)));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scales, acc[r][t]);
                }
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int t = 0; t < TOKENS; ++t) y[t * y_stride + row] = horizontal_sum(acc[r][t]);
        }
    }
}

// A q4_K block's 8 group scales and minimums (6 bits each) as int16 (quant_blocks.h).
GPTJ_AVX2_INLINE void q4_k_scales_mins(const uint8_t * packed, __m128i & scales, __m128i & mins) {
    uint64_t scale_bytes, min_bytes;
    q4_k_scale_min_bytes(packed, scale_bytes, min_bytes);
    scales = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(scale_bytes)));
    mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(min_bytes)));
}

// The same for q4_K weights, against activations in blocks of 256. Per block of 256 weights and
// token: the eight groups' nibble x activation sums, each times its 6-bit scale, add up in
// int32 (at most 8 * 32 * 15 * 127 * 63); their sum times the two f16 scales and the token's, minus
// the minimums (times the group sums of the activations) times the other f16 scale.
// q5_K (TYPE) is q4_K with each weight's fifth bit (worth 16) from `high`, shifted into place per
// group (values up to 31: vpmaddubsw's pairs stay below 2 * 31 * 127).
template <int ROWS, int TOKENS, ggml_type TYPE = GGML_TYPE_Q4_K>
GPTJ_AVX2 void rows_of_q4_k(const ggml_tensor * w, const uint8_t * x, int64_t x_stride, int64_t first_row,
                            int64_t end_row, float * y, int64_t y_stride) {
    using Block = std::conditional_t<TYPE == GGML_TYPE_Q5_K, BlockQ5_K, BlockQ4_K>;
    const int64_t k = w->ne[0], blocks = k / 256;
    const auto * w_data = static_cast<const char *>(w->data);
    const float * x_scales[TOKENS];
    const int16_t * x_sums[TOKENS];
    for (int t = 0; t < TOKENS; ++t) {
        x_scales[t] = reinterpret_cast<const float *>(x + t * x_stride + k);
        x_sums[t] = reinterpret_cast<const int16_t *>(x + t * x_stride + k + blocks * 4);
    }
    const __m256i low_nibbles = _mm256_set1_epi8(0x0F);
    const RowStripes<ROWS> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const Block * w_row[ROWS];
        for (int r = 0; r < ROWS; ++r) {
            w_row[r] = reinterpret_cast<const Block *>(w_data + stripes.row_to_read(r, pass) * w->nb[1]);
        }
        __m256 acc[ROWS][TOKENS];
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm256_setzero_ps();
        }
        for (int64_t b = 0; b < blocks; ++b) {
            alignas(16) int16_t scales[ROWS][8];
            __m128i mins[ROWS];
            float d[ROWS], d_min[ROWS];
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                const Block * block = w_row[r] + b;
                const char * ahead = reinterpret_cast<const char *>(block) + kPrefetchBytes;
                constexpr int kLines = static_cast<int>((sizeof(Block) + 63) / 64);
                for (int line = 0; line < kLines; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
                __m128i s;
                q4_k_scales_mins(block->scales, s, mins[r]);
                _mm_store_si128(reinterpret_cast<__m128i *>(scales[r]), s);
                d[r] = _cvtsh_ss(block->scale);
                d_min[r] = _cvtsh_ss(block->min_scale);
            }
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) {
                const auto * xq = reinterpret_cast<const __m256i *>(x + t * x_stride + b * 256);
                const __m128i group_sums = _mm_loadu_si128(reinterpret_cast<const __m128i *>(x_sums[t] + b * 8));
                const float x_scale = x_scales[t][b];
#pragma GCC unroll 4
                for (int r = 0; r < ROWS; ++r) {
                    const auto * nibbles = reinterpret_cast<const __m256i *>(w_row[r][b].nibbles);
                    __m256i sum = _mm256_setzero_si256();
#pragma GCC unroll 4
                    for (int i = 0; i < 4; ++i) {
                        const __m256i packed = _mm256_loadu_si256(nibbles + i);
                        __m256i low = _mm256_and_si256(packed, low_nibbles);
                        __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_nibbles);
                        if constexpr (TYPE == GGML_TYPE_Q5_K) {
                            // Groups 2i and 2i + 1: bits 2i and 2i + 1 of high[l], moved to bit 4.
                            const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w_row[r][b].high));
                            const __m256i one = _mm256_set1_epi8(1);
                            low = _mm256_or_si256(low, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * i), one), 4));
                            high = _mm256_or_si256(high,
                                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * i + 1), one), 4));
                        }
                        const __m256i low_dot = _mm256_madd_epi16(_mm256_maddubs_epi16(low, _mm256_loadu_si256(xq + 2 * i)),
                                                                  _mm256_set1_epi16(scales[r][2 * i]));
                        const __m256i high_dot = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(high, _mm256_loadu_si256(xq + 2 * i + 1)),
                            _mm256_set1_epi16(scales[r][2 * i + 1]));
                        sum = _mm256_add_epi32(sum, _mm256_add_epi32(low_dot, high_dot));
                    }
                    const __m256 min_sum = _mm256_cvtepi32_ps(_mm256_zextsi128_si256(_mm_madd_epi16(mins[r], group_sums)));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(d[r] * x_scale), acc[r][t]);
                    acc[r][t] = _mm256_fnmadd_ps(min_sum, _mm256_set1_ps(d_min[r] * x_scale), acc[r][t]);
                }
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int t = 0; t < TOKENS; ++t) y[t * y_stride + row] = horizontal_sum(acc[r][t]);
        }
    }
}

// The same for q6_K weights (quant_blocks.h), against activations in blocks of 256 with sums of
// each 16. Per 32 weights, their 6-bit values rebuilt from a nibble of `low` and 2 bits of `high`
// (both shifted into place per quarter of the half block), vpmaddubsw's int16 pairs (at most
// 2 * 63 * 127) times the two groups' scales (lanes 0-7 and 8-15) by vpmaddwd, exact in int32;
// the -32 offset is 32 times the scales against the activations' group sums, subtracted in int32.
template <int ROWS, int TOKENS>
GPTJ_AVX2 void rows_of_q6_k(const ggml_tensor * w, const uint8_t * x, int64_t x_stride, int64_t first_row,
                            int64_t end_row, float * y, int64_t y_stride) {
    const int64_t k = w->ne[0], blocks = k / 256;
    const auto * w_data = static_cast<const char *>(w->data);
    const float * x_scales[TOKENS];
    const int16_t * x_sums[TOKENS];
    for (int t = 0; t < TOKENS; ++t) {
        x_scales[t] = reinterpret_cast<const float *>(x + t * x_stride + k);
        x_sums[t] = reinterpret_cast<const int16_t *>(x + t * x_stride + k + blocks * 4);
    }
    const __m256i low_nibbles = _mm256_set1_epi8(0x0F);
    // vpshufb control: in lanes 0-7 the low int16 of each int32, in lanes 8-15 the high one.
    const __m256i pair_halves = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,  //
                                                 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    const RowStripes<ROWS> stripes(first_row, end_row);
    for (int64_t pass = 0; pass < stripes.length; ++pass) {
        const BlockQ6_K * w_row[ROWS];
        for (int r = 0; r < ROWS; ++r) {
            w_row[r] = reinterpret_cast<const BlockQ6_K *>(w_data + stripes.row_to_read(r, pass) * w->nb[1]);
        }
        __m256 acc[ROWS][TOKENS];
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm256_setzero_ps();
        }
        for (int64_t b = 0; b < blocks; ++b) {
            __m256i scales[ROWS];  // the 16 group scales as int16
            float d[ROWS];
#pragma GCC unroll 4
            for (int r = 0; r < ROWS; ++r) {
                const BlockQ6_K * block = w_row[r] + b;
                const char * ahead = reinterpret_cast<const char *>(block) + kPrefetchBytes;
                for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
                scales[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(block->scales)));
                d[r] = _cvtsh_ss(block->scale);
            }
#pragma GCC unroll 4
            for (int t = 0; t < TOKENS; ++t) {
                const auto * xq = reinterpret_cast<const __m256i *>(x + t * x_stride + b * 256);
                const __m256i group_sums = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x_sums[t] + b * 16));
                const float x_scale = x_scales[t][b];
#pragma GCC unroll 4
                for (int r = 0; r < ROWS; ++r) {
                    const BlockQ6_K * block = w_row[r] + b;
                    // -32 * sum(scale * group sum), exact (at most 32 * 16 * 128 * 2032 in size).
                    __m256i sum = _mm256_sub_epi32(_mm256_setzero_si256(),
                                                   _mm256_slli_epi32(_mm256_madd_epi16(scales[r], group_sums), 5));
#pragma GCC unroll 2
                    for (int h = 0; h < 2; ++h) {
                        const auto * low = reinterpret_cast<const __m256i *>(block->low + 64 * h);
                        const __m256i low0 = _mm256_loadu_si256(low), low1 = _mm256_loadu_si256(low + 1);
                        const __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(block->high + 32 * h));
                        const __m256i values[4] = {
                            _mm256_or_si256(_mm256_and_si256(low0, low_nibbles),
                                            _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(0x03)), 4)),
                            _mm256_or_si256(_mm256_and_si256(low1, low_nibbles),
                                            _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(0x0C)), 2)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low0, 4), low_nibbles),
                                            _mm256_and_si256(high, _mm256_set1_epi8(0x30))),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low1, 4), low_nibbles),
                                            _mm256_srli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(static_cast<char>(0xC0))), 2)),
                        };
#pragma GCC unroll 4
                        for (int j = 0; j < 4; ++j) {
                            const int chunk = 4 * h + j;  // weights 32 chunk .. 32 chunk + 31: groups 2 chunk, 2 chunk + 1
                            const __m256i chunk_scales = _mm256_shuffle_epi8(
                                _mm256_permutevar8x32_epi32(scales[r], _mm256_set1_epi32(chunk)), pair_halves);
                            const __m256i pairs = _mm256_maddubs_epi16(values[j], _mm256_loadu_si256(xq + chunk));
                            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, chunk_scales));
                        }
                    }
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(d[r] * x_scale), acc[r][t]);
                }
            }
        }
        for (int r = 0; r < ROWS; ++r) {
            if (!stripes.has(r, pass)) continue;
            const int64_t row = stripes.row(r, pass);
            for (int t = 0; t < TOKENS; ++t) y[t * y_stride + row] = horizontal_sum(acc[r][t]);
        }
    }
}

using RowsKernel = void (*)(const ggml_tensor *, const uint8_t *, int64_t, int64_t, int64_t, float *, int64_t);

// One token: 4 rows (memory streams); 2-4 tokens: 2 rows, their accumulators filling the 16
// ymm registers.
template <int TOKENS>
RowsKernel pick_type(ggml_type type) {
    constexpr int ROWS = TOKENS == 1 ? 4 : 2;
    // q4_K / q5_K: 2 rows (one token, 8-layer 6B-shaped, 2 threads, against 1 row, which measured
    // faster before the row stripes: q4_K 1.24x, q5_K 1.08x; 4 rows q4_K 1.28x, q5_K 0.96x).
    constexpr int Q4K_ROWS = 2;
    switch (type) {
        case GGML_TYPE_Q8_0: return rows_of_q8_0<ROWS, TOKENS>;
        case GGML_TYPE_Q4_0: return rows_of_q4_0<ROWS, TOKENS>;
        case GGML_TYPE_Q5_K: return rows_of_q4_k<Q4K_ROWS, TOKENS, GGML_TYPE_Q5_K>;
        case GGML_TYPE_Q6_K: return rows_of_q6_k<2, TOKENS>;  // 2 rows measured 1.03 -> 1.10x ggml's for one token
        default: return rows_of_q4_k<Q4K_ROWS, TOKENS>;  // int8_avx2_applies admits no other
    }
}

RowsKernel pick(ggml_type type, int tokens) {
    static_assert(kPassTokens == 4, "the dispatch below covers 1..4 tokens");
    switch (tokens) {
        case 1: return pick_type<1>(type);
        case 2: return pick_type<2>(type);
        case 3: return pick_type<3>(type);
        default: return pick_type<4>(type);
    }
}

// Rounds 32 activations to 8 bits (values and scale as above); returns the values' sum.
GPTJ_AVX2_INLINE int round_block(const float * x, int8_t * values, float & scale) {
    const float amax = max_magnitude(x, 32);
    scale = amax / 127.0f;
    return round_32(x, _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f), values);
}

// Writes the form `userdata` names for each token (the layouts above). Thread ith of nth takes
// a range of the (token, unit) pairs, a unit being what one scale (or pair of scales) covers.
GPTJ_AVX2 void quantize_task(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const Form form = *static_cast<const Form *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], n_tokens = x->ne[1];
    const int64_t unit = form == Form::of32 ? 32 : form == Form::pairs_of32 ? 64 : 256, per_token = k / unit;
    const int64_t total = per_token * n_tokens;
    for (int64_t job = total * ith / nth; job < total * (ith + 1) / nth; ++job) {
        const int64_t token = job / per_token, u = job % per_token;
        const float * xu = reinterpret_cast<const float *>(static_cast<const char *>(x->data) + token * x->nb[1]) + u * unit;
        auto * row = static_cast<uint8_t *>(dst->data) + token * dst->nb[1];
        auto * values = reinterpret_cast<int8_t *>(row) + u * unit;
        if (form == Form::of32) {
            float scale;
            round_block(xu, values, scale);
            std::memcpy(row + k + u * 4, &scale, sizeof scale);
        } else if (form == Form::pairs_of32) {
            alignas(32) int8_t blocks[2][32];
            float scales[2];
            int32_t sums[2];
            for (int i = 0; i < 2; ++i) sums[i] = -8 * round_block(xu + 32 * i, blocks[i], scales[i]);
            for (int half = 0; half < 2; ++half) {
                for (int i = 0; i < 2; ++i) std::memcpy(values + 32 * half + 16 * i, blocks[i] + 16 * half, 16);
            }
            float lane_scales[8];
            int32_t lane_sums[8] = {};
            for (int lane = 0; lane < 8; ++lane) lane_scales[lane] = scales[lane / 4];
            lane_sums[0] = sums[0];
            lane_sums[4] = sums[1];
            std::memcpy(row + k + u * 64, lane_scales, sizeof lane_scales);
            std::memcpy(row + k + u * 64 + 32, lane_sums, sizeof lane_sums);
        } else if (form == Form::of256_by16) {
            const float amax = max_magnitude(xu, 256);
            const float scale = amax / 127.0f;
            const __m256 inverse = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
            std::memcpy(row + k + u * 4, &scale, sizeof scale);
            for (int64_t i = 0; i < 256; i += 32) {
                round_32(xu + i, inverse, values + i);
                for (int64_t half = 0; half < 32; half += 16) {  // |sum| <= 16 * 127
                    int sum = 0;
                    for (int64_t j = 0; j < 16; ++j) sum += values[i + half + j];
                    const auto group_sum = static_cast<int16_t>(sum);
                    std::memcpy(row + k + per_token * 4 + (u * 16 + (i + half) / 16) * 2, &group_sum, sizeof group_sum);
                }
            }
        } else {
            const float amax = max_magnitude(xu, 256);
            const float scale = amax / 127.0f;
            const __m256 inverse = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
            std::memcpy(row + k + u * 4, &scale, sizeof scale);
            for (int64_t i = 0; i < 256; i += 32) {
                const auto group_sum = static_cast<int16_t>(round_32(xu + i, inverse, values + i));  // |sum| <= 32 * 127
                std::memcpy(row + k + per_token * 4 + (u * 8 + i / 32) * 2, &group_sum, sizeof group_sum);
            }
        }
    }
}

}  // namespace

bool int8_avx2_applies(const ggml_tensor * weights, bool in_plain_memory, int64_t n_tokens) {
    const ggml_type type = weights->type;
    const bool handled = type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_K ||
                         type == GGML_TYPE_Q5_K || type == GGML_TYPE_Q6_K;
    return handled && in_plain_memory && ggml_is_contiguous(weights) && n_tokens >= 1 &&
           n_tokens <= kInt8Avx2MaxTokens && weights->ne[0] % row_multiple(type) == 0 && !cpu_has_avx512f() &&
           cpu_has_avx2();
}

// q4_K too: our 2-row q4_K kernel against ggml's repacked one, one token at a time (8-layer 6B
// shapes, 2 threads, GPTJ_GGML_ISA=avx2, alternating): 1.21x faster on an Intel Xeon (46.6 vs
// 56.4 ms), 0.94x on an AMD Zen 4 (42.7 vs 40.0), and no repacking at load (1.8 s for 8 layers).
bool int8_avx2_prefers_file_layout(ggml_type type) {
    return (type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_K) && !cpu_has_avx512f() &&
           cpu_has_avx2();
}

int int8_avx2_form(ggml_type weight_type) { return static_cast<int>(form_for(weight_type)); }

ggml_tensor * int8_avx2_activations(ggml_context * ctx, ggml_tensor * x, ggml_type weight_type) {
    ggml_tensor * args[] = {x};
    const Form form = form_for(weight_type);
    void * userdata = const_cast<Form *>(&kForms[static_cast<int>(form)]);
    return ggml_custom_4d(ctx, GGML_TYPE_I8, activation_row_bytes(form, x->ne[0]), x->ne[1], 1, 1, args, 1,
                          quantize_task, GGML_N_TASKS_MAX, userdata);
}

void int8_avx2_matvec_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const auto [first_row, end_row] = thread_rows(w->ne[1], ith, nth);
    if (first_row >= end_row) return;
    const auto * xq = static_cast<const uint8_t *>(x->data);
    const int64_t x_stride = static_cast<int64_t>(x->nb[1]);
    auto * y = static_cast<float *>(dst->data);
    const int64_t y_stride = static_cast<int64_t>(dst->nb[1] / sizeof(float));
    const int n_tokens = static_cast<int>(dst->ne[1]);
    in_passes(first_row, end_row, n_tokens, kPassTokens, kPassRows, [&](int64_t first, int64_t end, int t, int tokens) {
        pick(w->type, tokens)(w, xq + t * x_stride, x_stride, first, end, y + t * y_stride, y_stride);
    });
}

}  // namespace gptj

#else

namespace gptj {
bool int8_avx2_applies(const ggml_tensor *, bool, int64_t) { return false; }
bool int8_avx2_prefers_file_layout(ggml_type) { return false; }
int int8_avx2_form(ggml_type) { return 0; }
ggml_tensor * int8_avx2_activations(ggml_context *, ggml_tensor * x, ggml_type) { return x; }  // never called
void int8_avx2_matvec_task(ggml_tensor *, int, int, void *) {}
}  // namespace gptj

#endif
