#include "gptj/kernels/decode_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "gptj/kernels/isa.h"

namespace gptj {
namespace {
std::atomic<bool> g_enabled{true};

bool is_cache_type(ggml_type type) {
    return type == GGML_TYPE_F16 || type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0;
}
}  // namespace

void set_decode_attention_enabled(bool enabled) { g_enabled = enabled; }
bool decode_attention_available() { return g_enabled && cpu_has_avx2(); }

bool decode_attention_applies(ggml_type cache_type, int64_t head_dim) {
    if (!decode_attention_available() || !is_cache_type(cache_type) || head_dim <= 0) return false;
    return head_dim % (cache_type == GGML_TYPE_F16 ? 8 : 32) == 0;
}

}  // namespace gptj

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "gptj/kernels/avx2.h"
#include "gptj/kernels/quant_blocks.h"

namespace gptj {
namespace {

// Positions whose value rows are summed while they stay in L1: 32 rows of a GPT-J-6B head (256
// values) are 8.7 KiB in q8_0, 16 KiB in f16.
constexpr int64_t kValuePositions = 32;

// A cache type's blocks as 8-float vectors: kValues per block (8 for f16, whose "blocks" are
// just 8 values; 32 for q8_0 and q4_0), their scale kept apart so that it is applied once per
// block (to the block's dot product for keys, to the softmax weight for values).
template <ggml_type TYPE>
struct CacheBlocks;

template <>
struct CacheBlocks<GGML_TYPE_F16> {
    static constexpr int kValues = 8;
    static constexpr bool kScaled = false;
    static GPTJ_AVX2_INLINE void load(const char * head, int64_t b, __m256 * v) {
        v[0] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(head) + b));
    }
    static float scale(const char *, int64_t) { return 1.0f; }
};

template <>
struct CacheBlocks<GGML_TYPE_Q8_0> {
    static constexpr int kValues = 32;
    static constexpr bool kScaled = true;
    static GPTJ_AVX2_INLINE void load(const char * head, int64_t b, __m256 * v) {
        const int8_t * q = reinterpret_cast<const BlockQ8_0 *>(head)[b].values;
        for (int i = 0; i < 4; ++i) {
            v[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(q + 8 * i))));
        }
    }
    static GPTJ_AVX2_INLINE float scale(const char * head, int64_t b) {
        return _cvtsh_ss(reinterpret_cast<const BlockQ8_0 *>(head)[b].scale);
    }
};

template <>
struct CacheBlocks<GGML_TYPE_Q4_0> {
    static constexpr int kValues = 32;
    static constexpr bool kScaled = true;
    static GPTJ_AVX2_INLINE void load(const char * head, int64_t b, __m256 * v) {
        const __m128i nibbles = _mm_loadu_si128(reinterpret_cast<const __m128i *>(reinterpret_cast<const BlockQ4_0 *>(head)[b].nibbles));
        const __m128i low_bits = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
        const __m128i low = _mm_sub_epi8(_mm_and_si128(nibbles, low_bits), eight);                      // values 0-15
        const __m128i high = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(nibbles, 4), low_bits), eight);  // 16-31
        v[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(low));
        v[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(low, 8)));
        v[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(high));
        v[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(high, 8)));
    }
    static GPTJ_AVX2_INLINE float scale(const char * head, int64_t b) {
        return _cvtsh_ss(reinterpret_cast<const BlockQ4_0 *>(head)[b].scale);
    }
};

// Where a head's slice of the cache starts and how its positions are strided.
struct HeadRows {
    const char * first;  // position 0's slice
    size_t stride;       // bytes from one position to the next (the cache's row)
    const char * at(int64_t position) const { return first + static_cast<size_t>(position) * stride; }
};

// scores[j] = scale * q . key_j for R positions from j, as the block dot products summed.
template <ggml_type TYPE, int R>
GPTJ_AVX2_INLINE void score_positions(const float * q, HeadRows keys, int64_t j, int64_t n_blocks, float scale,
                                      float * scores) {
    using Blocks = CacheBlocks<TYPE>;
    constexpr int kVectors = Blocks::kValues / 8;
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float * qb = q + b * Blocks::kValues;
        for (int r = 0; r < R; ++r) {
            const char * head = keys.at(j + r);
            __m256 v[kVectors];
            Blocks::load(head, b, v);
            if constexpr (Blocks::kScaled) {
                __m256 dot = _mm256_mul_ps(v[0], _mm256_loadu_ps(qb));
                for (int i = 1; i < kVectors; ++i) dot = _mm256_fmadd_ps(v[i], _mm256_loadu_ps(qb + 8 * i), dot);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(Blocks::scale(head, b)), dot, acc[r]);
            } else {
                for (int i = 0; i < kVectors; ++i) acc[r] = _mm256_fmadd_ps(v[i], _mm256_loadu_ps(qb + 8 * i), acc[r]);
            }
        }
    }
    for (int r = 0; r < R; ++r) scores[j + r] = scale * avx2::horizontal_sum(acc[r]);
}

template <ggml_type TYPE>
GPTJ_AVX2 void score_head(const float * q, HeadRows keys, int64_t n_kv, int64_t head_dim, float * scores) {
    const int64_t n_blocks = head_dim / CacheBlocks<TYPE>::kValues;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    int64_t j = 0;
    for (; j + 4 <= n_kv; j += 4) score_positions<TYPE, 4>(q, keys, j, n_blocks, scale, scores);
    for (; j < n_kv; ++j) score_positions<TYPE, 1>(q, keys, j, n_blocks, scale, scores);
}

// e^x for x <= 0 (or NaN, which passes through): e^x = 2^n e^r with n = round(x / ln 2) and |r| <=
// ln 2 / 2, e^r by its Taylor series to r^6 (error below 2e-7 relative). Below -87 the result is
// clamped to e^-87 (< 2^-125): a softmax weight that small is nothing beside the largest, 1.
GPTJ_AVX2_INLINE __m256 exp_nonpositive(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);  // max's second operand wins when it is NaN
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // ln 2 in two parts: n * the first is exact for |n| < 2^11.
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i two_to_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(two_to_n));
}

// Replaces scores by e^(score - max score) and returns their sum; NaN if any score is NaN.
GPTJ_AVX2 float exponentiate(float * scores, int64_t n) {
    float max_score = -INFINITY;
    bool any_nan = false;
    for (int64_t j = 0; j < n; ++j) {
        any_nan |= std::isnan(scores[j]);
        max_score = std::max(max_score, scores[j]);
    }
    if (any_nan) return NAN;
    const __m256 max_v = _mm256_set1_ps(max_score);
    __m256 sum = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + j), max_v));
        _mm256_storeu_ps(scores + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    float total = avx2::horizontal_sum(sum);
    for (; j < n; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        total += scores[j];
    }
    return total;
}

// out[first, first + 8 kVectors) += sum over positions [j0, j1) of weights[j] * value_j there,
// with the 8 kVectors sums in registers.
template <ggml_type TYPE, int kVectors>
GPTJ_AVX2_INLINE void sum_values_part(const float * weights, HeadRows values, int64_t j0, int64_t j1, int64_t first,
                                      float * out) {
    using Blocks = CacheBlocks<TYPE>;
    constexpr int kBlockVectors = Blocks::kValues / 8;
    static_assert(kVectors % kBlockVectors == 0, "a part is whole blocks");
    __m256 acc[kVectors];
    for (int i = 0; i < kVectors; ++i) acc[i] = _mm256_loadu_ps(out + first + 8 * i);
    const int64_t first_block = first / Blocks::kValues;
    for (int64_t j = j0; j < j1; ++j) {
        const char * head = values.at(j);
        for (int b = 0; b < kVectors / kBlockVectors; ++b) {
            __m256 v[kBlockVectors];
            Blocks::load(head, first_block + b, v);
            const float w = Blocks::kScaled ? weights[j] * Blocks::scale(head, first_block + b) : weights[j];
            const __m256 wv = _mm256_set1_ps(w);
            for (int i = 0; i < kBlockVectors; ++i) {
                acc[b * kBlockVectors + i] = _mm256_fmadd_ps(wv, v[i], acc[b * kBlockVectors + i]);
            }
        }
    }
    for (int i = 0; i < kVectors; ++i) _mm256_storeu_ps(out + first + 8 * i, acc[i]);
}

// out[0, head_dim) = sum over every position of weights[j] * value_j: positions in blocks that
// stay in L1 while the head passes over them 64 values at a time (8 accumulators), the rest in
// parts of 32 or, for f16, 8.
template <ggml_type TYPE>
GPTJ_AVX2 void sum_values(const float * weights, HeadRows values, int64_t n_kv, int64_t head_dim, float * out) {
    std::fill(out, out + head_dim, 0.0f);
    for (int64_t j0 = 0; j0 < n_kv; j0 += kValuePositions) {
        const int64_t j1 = std::min(n_kv, j0 + kValuePositions);
        int64_t first = 0;
        for (; first + 64 <= head_dim; first += 64) sum_values_part<TYPE, 8>(weights, values, j0, j1, first, out);
        for (; first + 32 <= head_dim; first += 32) sum_values_part<TYPE, 4>(weights, values, j0, j1, first, out);
        if constexpr (TYPE == GGML_TYPE_F16) {
            for (; first < head_dim; first += 8) sum_values_part<TYPE, 1>(weights, values, j0, j1, first, out);
        }
    }
}

template <ggml_type TYPE>
GPTJ_AVX2 void attend_head(const float * q, HeadRows keys, HeadRows values, int64_t n_kv, int64_t head_dim,
                           std::vector<float> & scores, float * out) {
    scores.resize(static_cast<size_t>(n_kv));
    score_head<TYPE>(q, keys, n_kv, head_dim, scores.data());
    const float total = exponentiate(scores.data(), n_kv);
    if (std::isnan(total)) {  // a NaN query or key: the head's output is NaN, as the reference's
        std::fill(out, out + head_dim, NAN);
        return;
    }
    sum_values<TYPE>(scores.data(), values, n_kv, head_dim, out);
    const __m256 inverse = _mm256_set1_ps(1.0f / total);
    for (int64_t i = 0; i < head_dim; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), inverse));
}

using AttendHead = void (*)(const float *, HeadRows, HeadRows, int64_t, int64_t, std::vector<float> &, float *);

AttendHead pick(ggml_type type) {
    switch (type) {
        case GGML_TYPE_F16: return attend_head<GGML_TYPE_F16>;
        case GGML_TYPE_Q8_0: return attend_head<GGML_TYPE_Q8_0>;
        case GGML_TYPE_Q4_0: return attend_head<GGML_TYPE_Q4_0>;
        default: return nullptr;
    }
}

}  // namespace

void decode_attention_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * keys = dst->src[1];
    const ggml_tensor * values = dst->src[2];
    const int64_t head_dim = q->ne[0], n_head = q->ne[1], n_kv = keys->ne[1];
    const int64_t first_head = n_head * ith / nth, end_head = n_head * (ith + 1) / nth;
    const AttendHead attend = pick(keys->type);
    const size_t head_bytes = ggml_row_size(keys->type, head_dim);
    thread_local std::vector<float> scores;  // n_kv floats: 7.6 KiB at 1900 positions
    for (int64_t h = first_head; h < end_head; ++h) {
        const HeadRows head_keys{static_cast<const char *>(keys->data) + h * head_bytes, keys->nb[1]};
        const HeadRows head_values{static_cast<const char *>(values->data) + h * head_bytes, values->nb[1]};
        attend(reinterpret_cast<const float *>(static_cast<const char *>(q->data) + h * q->nb[1]), head_keys, head_values,
               n_kv, head_dim, scores, reinterpret_cast<float *>(static_cast<char *>(dst->data) + h * dst->nb[1]));
    }
}

}  // namespace gptj

#else

namespace gptj {
void decode_attention_task(ggml_tensor *, int, int, void *) {}  // never built into a graph without AVX2
}  // namespace gptj

#endif
