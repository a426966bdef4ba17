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
#include "gptj/kernels/weight_loads_avx2.h"

namespace gptj {
namespace {

// A cache type's blocks: kValues per block (8 for f16, whose "blocks" are just 8 values; 32 for
// q8_0 and q4_0) as 8-float vectors (load) or, quantized, as 32 signed bytes (bytes), their scale
// kept apart so that it is applied once per block (to the block's dot product for keys, to the
// softmax weight for values).
template <ggml_type TYPE>
struct CacheBlocks;

template <>
struct CacheBlocks<GGML_TYPE_F16> {
    static constexpr int kValues = 8;
    static constexpr bool kScaled = false;
    static GPTJ_AVX2_INLINE void load(const char * head, int64_t b, __m256 * v) {
        v[0] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(head) + b));
    }
};

template <>
struct CacheBlocks<GGML_TYPE_Q8_0> {
    static constexpr int kValues = 32;
    static constexpr bool kScaled = true;
    static GPTJ_AVX2_INLINE void load(const char * head, int64_t b, __m256 * v) {
        avx2::q8_0_values(reinterpret_cast<const BlockQ8_0 *>(head)[b], v);
    }
    static GPTJ_AVX2_INLINE const float * scale(const char * head, int64_t b, const float * f16_values) {
        return f16_values + reinterpret_cast<const BlockQ8_0 *>(head)[b].scale;
    }
    static GPTJ_AVX2_INLINE __m256i bytes(const char * head, int64_t b) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(reinterpret_cast<const BlockQ8_0 *>(head)[b].values));
    }
};

template <>
struct CacheBlocks<GGML_TYPE_Q4_0> {
    static constexpr int kValues = 32;
    static constexpr bool kScaled = true;
    static GPTJ_AVX2_INLINE void load(const char * head, int64_t b, __m256 * v) {
        avx2::q4_0_values(reinterpret_cast<const BlockQ4_0 *>(head)[b], v);
    }
    static GPTJ_AVX2_INLINE const float * scale(const char * head, int64_t b, const float * f16_values) {
        return f16_values + reinterpret_cast<const BlockQ4_0 *>(head)[b].scale;
    }
    static GPTJ_AVX2_INLINE __m256i bytes(const char * head, int64_t b) {
        const __m128i nibbles = _mm_loadu_si128(reinterpret_cast<const __m128i *>(reinterpret_cast<const BlockQ4_0 *>(head)[b].nibbles));
        const __m256i both = _mm256_set_m128i(_mm_srli_epi16(nibbles, 4), nibbles);
        return _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
    }
};

// Where a head's slice of the cache starts and how its positions are strided.
struct HeadRows {
    const char * first;  // position 0's slice
    size_t stride;       // bytes from one position to the next (the cache's row)
    const char * at(int64_t position) const { return first + static_cast<size_t>(position) * stride; }
};

// scores[j] = scale * q . key_j for R positions from j, f16 keys converted to f32.
template <int R>
GPTJ_AVX2_INLINE void score_positions_f16(const float * q, HeadRows keys, int64_t j, int64_t head_dim, float scale,
                                          float * scores) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < head_dim / 8; ++b) {
        const __m256 qb = _mm256_loadu_ps(q + 8 * b);
        for (int r = 0; r < R; ++r) {
            __m256 v;
            CacheBlocks<GGML_TYPE_F16>::load(keys.at(j + r), b, &v);
            acc[r] = _mm256_fmadd_ps(v, qb, acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) scores[j + r] = scale * avx2::horizontal_sum(acc[r]);
}

// A head's queries rounded to 8 bits per block of 32 (symmetric, a scale each: what ggml's own
// products with q8_0 and q4_0 do), for integer dot products with quantized keys: two and a half
// times fewer instructions per block than converting each key to f32 (the kernel 1.07x faster at
// 1900 positions).
struct RoundedQuery {
    const int8_t * values;
    const float * scales;
};

// As ggml's AVX2 q8_0 rounding: scale amax / 127 kept in f16, values times 127 / amax rounded to even.
GPTJ_AVX2 void round_query(const float * q, int64_t head_dim, int8_t * values, float * scales) {
    for (int64_t b = 0; b < head_dim / 32; ++b) {
        const float amax = avx2::max_magnitude(q + 32 * b, 32);  // NaN if a query is: its scores are NaN
        scales[b] = _cvtsh_ss(_cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT));
        avx2::round_32(q + 32 * b, _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f), values + 32 * b);
    }
}

// n floats (a multiple of 8) rounded to f16 and back.
GPTJ_AVX2 void round_to_f16(const float * x, int64_t n, float * out) {
    for (int64_t i = 0; i < n; i += 8) {
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    }
}

// score_positions for quantized keys: per block, |key| (unsigned) times the query's byte with the
// key's sign (vpmaddubsw: pairs of at most 127 x 127, exact in int16), pairs of pairs summed in
// int32, then scaled by the key's and the query's scales.
template <ggml_type TYPE, int R>
GPTJ_AVX2_INLINE void score_positions_int8(RoundedQuery q, HeadRows keys, int64_t j, int64_t n_blocks, float scale,
                                           const float * f16_values, float * scores) {
    using Blocks = CacheBlocks<TYPE>;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n_blocks; ++b) {
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q.values + 32 * b));
        const __m256 q_scale = _mm256_broadcast_ss(q.scales + b);
        for (int r = 0; r < R; ++r) {
            const char * head = keys.at(j + r);
            const __m256i kx = Blocks::bytes(head, b);
            const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(kx, kx), _mm256_sign_epi8(qy, kx));
            const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            const __m256 block_scale = _mm256_mul_ps(_mm256_broadcast_ss(Blocks::scale(head, b, f16_values)), q_scale);
            acc[r] = _mm256_fmadd_ps(block_scale, dot, acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) scores[j + r] = scale * avx2::horizontal_sum(acc[r]);
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

// The thread's heads, side by side in each position's row of the cache.
struct Heads {
    const float * q;        // head h's queries at q + h * q_stride
    int64_t q_stride;
    HeadRows keys, values;  // head 0's; head h's h * head_bytes further
    size_t head_bytes;
    float * out;            // head h's output at out + h * out_stride
    int64_t out_stride;
    int64_t count, head_dim, n_kv;
    const float * f16_values;  // every f16 bit pattern's value: a block's scale by one load

    HeadRows keys_of(int64_t h) const { return {keys.first + h * head_bytes, keys.stride}; }
    HeadRows values_of(int64_t h) const { return {values.first + h * head_bytes, values.stride}; }
};

// A thread's working memory, kept between calls: the heads' scores (61 KiB for 8 heads at 1900
// positions), their sums of exponentials, and the rounded queries.
struct Scratch {
    std::vector<float> scores, totals;
    std::vector<int8_t> query_values;
    std::vector<float> query_scales;
    std::vector<RoundedQuery> queries;
    std::vector<float> f16_queries;
};

// R positions' scores from j for each of the thread's heads.
template <ggml_type TYPE, int R>
GPTJ_AVX2_INLINE void score_all_heads(const Heads & heads, const std::vector<RoundedQuery> & queries,
                                      const float * f16_queries, int64_t j, float scale, float * scores) {
    const int64_t n_blocks = heads.head_dim / CacheBlocks<TYPE>::kValues, n_kv = heads.n_kv;
    for (int64_t h = 0; h < heads.count; ++h) {
        if constexpr (CacheBlocks<TYPE>::kScaled) {
            score_positions_int8<TYPE, R>(queries[static_cast<size_t>(h)], heads.keys_of(h), j, n_blocks, scale,
                                          heads.f16_values, scores + h * n_kv);
        } else {
            score_positions_f16<R>(f16_queries + h * heads.head_dim, heads.keys_of(h), j, heads.head_dim, scale,
                                   scores + h * n_kv);
        }
    }
}

// Every position's scores for each head, then their exponentials; the positions outermost so
// that each row of the cache is read once for all the thread's heads (head by head, a head's
// 1900 positions would each be on another page: a TLB miss per position and head).
// Each head's sum of exponentials into scratch.totals (NaN: a NaN score).
template <ggml_type TYPE>
GPTJ_AVX2 void score_heads(const Heads & heads, Scratch & scratch) {
    const int64_t n_kv = heads.n_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(heads.head_dim));
    scratch.scores.resize(static_cast<size_t>(heads.count * n_kv));
    scratch.totals.resize(static_cast<size_t>(heads.count));
    scratch.queries.clear();
    // The queries rounded as ggml's flash-attention kernel rounds them for the same keys (prompt
    // batches take that kernel): to f16 for f16 keys, to 8 bits per block for quantized ones. So
    // a token's logits do not depend on whether it came alone or in a batch (prefix reuse, drafts
    // verified in one batch, and fresh evaluations agree). Against transformers it cost nothing
    // measurable: f16, heads of 256, 3.5e-4 relative logit error rounded (ggml's kernel 5.6e-4).
    if constexpr (!CacheBlocks<TYPE>::kScaled) {
        scratch.f16_queries.resize(static_cast<size_t>(heads.count * heads.head_dim));
        for (int64_t h = 0; h < heads.count; ++h) {
            round_to_f16(heads.q + h * heads.q_stride, heads.head_dim, scratch.f16_queries.data() + h * heads.head_dim);
        }
    } else {
        const int64_t n_blocks = heads.head_dim / 32;
        scratch.query_values.resize(static_cast<size_t>(heads.count * heads.head_dim));
        scratch.query_scales.resize(static_cast<size_t>(heads.count * n_blocks));
        for (int64_t h = 0; h < heads.count; ++h) {
            int8_t * values = scratch.query_values.data() + h * heads.head_dim;
            float * scales = scratch.query_scales.data() + h * n_blocks;
            round_query(heads.q + h * heads.q_stride, heads.head_dim, values, scales);
            scratch.queries.push_back({values, scales});
        }
    }
    float * scores = scratch.scores.data();
    int64_t j = 0;
    const float * f16_queries = scratch.f16_queries.data();
    for (; j + 4 <= n_kv; j += 4) score_all_heads<TYPE, 4>(heads, scratch.queries, f16_queries, j, scale, scores);
    for (; j < n_kv; ++j) score_all_heads<TYPE, 1>(heads, scratch.queries, f16_queries, j, scale, scores);
    for (int64_t h = 0; h < heads.count; ++h) scratch.totals[static_cast<size_t>(h)] = exponentiate(scores + h * n_kv, n_kv);
}

// Each head's output += the value rows of R positions from j times their weights (the
// exponentiated scores, times the block's scale): a block's sums loaded from the output, the R
// rows added, stored back, so that R rows share each load and store of the sums.
template <ggml_type TYPE, int R>
GPTJ_AVX2_INLINE void add_positions(const Heads & heads, const float * weights, int64_t j) {
    using Blocks = CacheBlocks<TYPE>;
    constexpr int kVectors = Blocks::kValues / 8;
    const int64_t n_blocks = heads.head_dim / Blocks::kValues;
    for (int64_t h = 0; h < heads.count; ++h) {
        const HeadRows values = heads.values_of(h);
        const float * w = weights + h * heads.n_kv + j;
        float * out = heads.out + h * heads.out_stride;
        for (int64_t b = 0; b < n_blocks; ++b) {
            __m256 acc[kVectors];
            for (int i = 0; i < kVectors; ++i) acc[i] = _mm256_loadu_ps(out + b * Blocks::kValues + 8 * i);
            for (int r = 0; r < R; ++r) {
                const char * head = values.at(j + r);
                __m256 v[kVectors];
                Blocks::load(head, b, v);
                __m256 wv = _mm256_broadcast_ss(w + r);
                if constexpr (Blocks::kScaled) wv = _mm256_mul_ps(wv, _mm256_broadcast_ss(Blocks::scale(head, b, heads.f16_values)));
                for (int i = 0; i < kVectors; ++i) acc[i] = _mm256_fmadd_ps(wv, v[i], acc[i]);
            }
            for (int i = 0; i < kVectors; ++i) _mm256_storeu_ps(out + b * Blocks::kValues + 8 * i, acc[i]);
        }
    }
}

// Each head's output = sum over positions of weights[j] * value_j, four positions at a time for
// all the thread's heads: the cache's rows are read in order, once (the sums, 1 KiB per head of
// 256, stay in L1).
template <ggml_type TYPE>
GPTJ_AVX2 void sum_heads(const Heads & heads, const float * weights) {
    for (int64_t h = 0; h < heads.count; ++h) {
        std::fill(heads.out + h * heads.out_stride, heads.out + h * heads.out_stride + heads.head_dim, 0.0f);
    }
    int64_t j = 0;
    for (; j + 4 <= heads.n_kv; j += 4) add_positions<TYPE, 4>(heads, weights, j);
    for (; j < heads.n_kv; ++j) add_positions<TYPE, 1>(heads, weights, j);
}

template <ggml_type TYPE>
GPTJ_AVX2 void attend(const Heads & heads, Scratch & scratch) {
    score_heads<TYPE>(heads, scratch);
    sum_heads<TYPE>(heads, scratch.scores.data());
    for (int64_t h = 0; h < heads.count; ++h) {
        float * out = heads.out + h * heads.out_stride;
        const float total = scratch.totals[static_cast<size_t>(h)];
        if (std::isnan(total)) {  // a NaN query or key: the head's output is NaN, as the reference's
            std::fill(out, out + heads.head_dim, NAN);
            continue;
        }
        const __m256 inverse = _mm256_set1_ps(1.0f / total);
        for (int64_t i = 0; i < heads.head_dim; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), inverse));
    }
}

using Attend = void (*)(const Heads &, Scratch &);

Attend pick(ggml_type type) {
    switch (type) {
        case GGML_TYPE_F16: return attend<GGML_TYPE_F16>;
        case GGML_TYPE_Q8_0: return attend<GGML_TYPE_Q8_0>;
        case GGML_TYPE_Q4_0: return attend<GGML_TYPE_Q4_0>;
        default: return nullptr;
    }
}

// Every f16 bit pattern's value (256 KiB): a block's scale in one load instead of an insert, a
// conversion and a broadcast, all on the one port of Intel cores that shuffles (the kernel's
// bottleneck, with the byte-to-int32 conversions).
std::vector<float> f16_table() {
    std::vector<float> values(65536);
    for (size_t bits = 0; bits < values.size(); ++bits) values[bits] = ggml_fp16_to_fp32(static_cast<ggml_fp16_t>(bits));
    return values;
}

}  // namespace

void decode_attention_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    static const std::vector<float> f16_values = f16_table();
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * keys = dst->src[1];
    const ggml_tensor * values = dst->src[2];
    const int64_t head_dim = q->ne[0], n_head = q->ne[1];
    const int64_t first_head = n_head * ith / nth, end_head = n_head * (ith + 1) / nth;
    if (first_head >= end_head) return;
    const size_t head_bytes = ggml_row_size(keys->type, head_dim);
    const int64_t q_stride = static_cast<int64_t>(q->nb[1] / sizeof(float));
    const int64_t out_stride = static_cast<int64_t>(dst->nb[1] / sizeof(float));
    const Heads heads{static_cast<const float *>(q->data) + first_head * q_stride,
                      q_stride,
                      {static_cast<const char *>(keys->data) + first_head * head_bytes, keys->nb[1]},
                      {static_cast<const char *>(values->data) + first_head * head_bytes, values->nb[1]},
                      head_bytes,
                      static_cast<float *>(dst->data) + first_head * out_stride,
                      out_stride,
                      end_head - first_head,
                      head_dim,
                      keys->ne[1],
                      f16_values.data()};
    thread_local Scratch scratch;
    pick(keys->type)(heads, scratch);
}

}  // namespace gptj

#else

namespace gptj {
void decode_attention_task(ggml_tensor *, int, int, void *) {}  // never built into a graph without AVX2
}  // namespace gptj

#endif
