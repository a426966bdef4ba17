#include "gptj/kernels/matvec_int8_token.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gptj/kernels/matvec.h"
#include "gptj/kernels/matvec_int8.h"
#include "gptj/kernels/quant_blocks.h"

namespace gptj {
namespace {

// The activations' form, one ggml row: the k values round(x / scale) (scale = max |x| / 127 per
// block of 32, so |q| <= 127) in the order the kernel reads them, then per unit (the weights
// one zmm of weight bytes covers) 16 floats, each lane's block scale, then per unit 16 int32, the
// bias term each lane's dot product starts from.
// - q8_0, units of 64 (two blocks): values in order; lanes 0-7 take block 0, 8-15 block 1. The
//   weights go into vpdpbusd as u8 = w + 128 (an xor), so lanes 0 and 8 start at -128 * their
//   block's sum of values.
// - q4_0, units of 128 (four blocks): the first 16 values of each block, then the last 16 of
//   each, as the four blocks' 64 nibble bytes unpack (low nibbles, then high); lanes 4j-4j+3 take
//   block j, and lane 4j starts at -8 * its sum (the weights are their nibbles minus 8).
enum class Form { pairs_of32, quads_of32 };

Form form_for(ggml_type type) { return type == GGML_TYPE_Q4_0 ? Form::quads_of32 : Form::pairs_of32; }
int64_t unit_weights(Form form) { return form == Form::quads_of32 ? 128 : 64; }
int64_t row_bytes(Form form, int64_t k) { return k + k / unit_weights(form) * 128; }

// The quantize op's userdata: which form to write (addresses of constants, never written).
constexpr Form kForms[] = {Form::pairs_of32, Form::quads_of32};

}  // namespace
}  // namespace gptj

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define GPTJ_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,f16c")))

// GCC 12 reports the undefined pass-through operand inside its own AVX-512 intrinsics
// (_mm512_max_ps, _mm512_cvtps_epi32, ...) as maybe uninitialized once they are inlined here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace gptj {
namespace {

// Prefetch distance in each row's stream, as in matvec.cpp.
constexpr int64_t kPrefetchBytes = 512;
// Rows at a time: memory streams in flight per thread, each activation vector loaded serving all.
constexpr int kRows = 4;

// y[row] = dot(w_row, x) for rows [first_row, end_row).
template <ggml_type TYPE>
GPTJ_VNNI void token_rows(const ggml_tensor * w, const uint8_t * x, int64_t first_row, int64_t end_row, float * y) {
    constexpr bool kQ8 = TYPE == GGML_TYPE_Q8_0;
    constexpr int64_t kUnit = kQ8 ? 64 : 128, kUnitBytes = kQ8 ? 2 * sizeof(BlockQ8_0) : 4 * sizeof(BlockQ4_0);
    const int64_t k = w->ne[0], units = k / kUnit;
    const auto * scales = reinterpret_cast<const float *>(x + k);
    const auto * starts = reinterpret_cast<const int32_t *>(x + k + units * 64);
    const auto * w_data = static_cast<const char *>(w->data);
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80)), low_nibbles = _mm512_set1_epi8(0x0F);
    // Word indices of the blocks' f16 scales within a unit's first 64 bytes, each repeated over
    // its block's lanes: q8_0's blocks are 17 words apart, q4_0's 9.
    alignas(64) static constexpr int16_t kQ8Words[32] = {0, 0, 0, 0, 0, 0, 0, 0, 17, 17, 17, 17, 17, 17, 17, 17};
    alignas(64) static constexpr int16_t kQ4Words[32] = {0, 0, 0, 0, 9, 9, 9, 9, 18, 18, 18, 18, 27, 27, 27, 27};
    const __m512i scale_words = _mm512_load_si512(kQ8 ? kQ8Words : kQ4Words);
    for (int64_t row = first_row; row < end_row; row += kRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kRows, end_row - row));
        const char * w_row[kRows];
        for (int r = 0; r < kRows; ++r) w_row[r] = w_data + (row + std::min(r, rows - 1)) * w->nb[1];
        __m512 acc[kRows];
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
        for (int64_t u = 0; u < units; ++u) {
            const __m512 x_scales = _mm512_loadu_ps(scales + 16 * u);
            const __m512i start = _mm512_loadu_si512(starts + 16 * u);
            const uint8_t * xu = x + u * kUnit;
            const __m512i x_low = _mm512_loadu_si512(xu);
            const __m512i x_high = kQ8 ? x_low : _mm512_loadu_si512(xu + 64);
#pragma GCC unroll 4
            for (int r = 0; r < kRows; ++r) {
                const char * unit = w_row[r] + u * kUnitBytes;
                _mm_prefetch(unit + kPrefetchBytes, _MM_HINT_T0);
                __m512i dot;
                if constexpr (kQ8) {
                    const __m512i values = _mm512_inserti64x4(
                        _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(unit + 2))),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(unit + sizeof(BlockQ8_0) + 2)), 1);
                    dot = _mm512_dpbusd_epi32(start, _mm512_xor_si512(values, bias), x_low);
                } else {
                    __m512i nibbles = _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i *>(unit + 2)));
                    nibbles = _mm512_inserti32x4(nibbles, _mm_loadu_si128(reinterpret_cast<const __m128i *>(unit + 20)), 1);
                    nibbles = _mm512_inserti32x4(nibbles, _mm_loadu_si128(reinterpret_cast<const __m128i *>(unit + 38)), 2);
                    nibbles = _mm512_inserti32x4(nibbles, _mm_loadu_si128(reinterpret_cast<const __m128i *>(unit + 56)), 3);
                    const __m512i low = _mm512_and_si512(nibbles, low_nibbles);
                    const __m512i high = _mm512_and_si512(_mm512_srli_epi16(nibbles, 4), low_nibbles);
                    dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, low, x_low), high, x_high);
                }
                const __m512i scale_bits = _mm512_permutexvar_epi16(scale_words, _mm512_loadu_si512(unit));
                const __m512 w_scales = _mm512_cvtph_ps(_mm512_castsi512_si256(scale_bits));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(w_scales, x_scales), acc[r]);
            }
        }
        for (int r = 0; r < rows; ++r) y[row + r] = _mm512_reduce_add_ps(acc[r]);
    }
}

// Rounds 32 activations to 8 bits (|q| <= 127), stored in two runs of 16; returns their sum and
// sets the scale, NaN if any activation is NaN (so that the product's outputs are NaN too, as
// the f32 kernels' would be, instead of integers that look like numbers).
GPTJ_VNNI int round_block(const float * x, int8_t * first16, int8_t * last16, float & scale) {
    const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    scale = nan != 0 ? NAN : amax / 127.0f;
    const __m512 inverse = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inverse)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, inverse));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(first16), _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(last16), _mm512_cvtsepi32_epi8(qb));
    return _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
}

// Writes the form `userdata` names (the layouts above). Thread ith of nth takes a range of units.
GPTJ_VNNI void quantize_task(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const Form form = *static_cast<const Form *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], unit = unit_weights(form), units = k / unit, blocks = unit / 32;
    const auto * xf = static_cast<const float *>(x->data);
    auto * out = static_cast<uint8_t *>(dst->data);
    auto * lane_scales = reinterpret_cast<float *>(out + k);
    auto * lane_starts = reinterpret_cast<int32_t *>(out + k + units * 64);
    for (int64_t u = units * ith / nth; u < units * (ith + 1) / nth; ++u) {
        auto * values = reinterpret_cast<int8_t *>(out + u * unit);
        const int lanes = 16 / static_cast<int>(blocks);
        for (int64_t j = 0; j < blocks; ++j) {
            float scale;
            // q8_0: block j's 32 values in order; q4_0: its first 16 at 16 j, its last 16 at 64 + 16 j.
            int8_t * first16 = form == Form::pairs_of32 ? values + 32 * j : values + 16 * j;
            int8_t * last16 = form == Form::pairs_of32 ? first16 + 16 : values + 64 + 16 * j;
            const int sum = round_block(xf + u * unit + 32 * j, first16, last16, scale);
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
    return (type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0) && n_tokens == 1 && in_plain_memory &&
           ggml_is_contiguous(weights) && weights->ne[0] % unit_weights(form_for(type)) == 0 && int8_matvec_enabled() &&
           cpu_has_avx512vnni();
}

int int8_token_form(ggml_type weight_type) { return static_cast<int>(form_for(weight_type)); }

ggml_tensor * int8_token_activations(ggml_context * ctx, ggml_tensor * x, ggml_type weight_type) {
    ggml_tensor * args[] = {x};
    const Form form = form_for(weight_type);
    void * userdata = const_cast<Form *>(&kForms[static_cast<int>(form)]);
    return ggml_custom_4d(ctx, GGML_TYPE_I8, row_bytes(form, x->ne[0]), 1, 1, 1, args, 1, quantize_task,
                          GGML_N_TASKS_MAX, userdata);
}

void int8_token_matvec_task(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * w = dst->src[0];
    const auto [first_row, end_row] = thread_rows(w->ne[1], ith, nth);
    if (first_row >= end_row) return;
    const auto * x = static_cast<const uint8_t *>(dst->src[1]->data);
    auto * y = static_cast<float *>(dst->data);
    if (w->type == GGML_TYPE_Q8_0) {
        token_rows<GGML_TYPE_Q8_0>(w, x, first_row, end_row, y);
    } else {
        token_rows<GGML_TYPE_Q4_0>(w, x, first_row, end_row, y);
    }
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
