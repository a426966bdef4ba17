#include "gptj/kernels/dequantize.h"

#include <cstring>

namespace gptj {

namespace {

// ggml's own dequantizer (scalar), from element k0, which is a multiple of the block size.
void row_to_f32_by_ggml(ggml_type type, const void * src, int64_t k0, int64_t n, float * dst) {
    const ggml_type_traits * traits = ggml_get_type_traits(type);
    traits->to_float(static_cast<const char *>(src) + k0 / traits->blck_size * traits->type_size, dst, n);
}

}  // namespace

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
}  // namespace gptj

#include "gptj/kernels/isa.h"
#include "gptj/kernels/weight_loads.h"
#include "gptj/kernels/weight_loads_avx2.h"

namespace gptj {
namespace {

// Weights k0 + i .. k0 + n of a dense row, the few a vector loop leaves (quantized rows are whole
// blocks: nothing is left).
template <ggml_type TYPE>
__attribute__((target("f16c"))) void convert_tail(const void * src, int64_t k0, int64_t i, int64_t n, float * dst) {
    if constexpr (TYPE == GGML_TYPE_F32) {
        std::memcpy(dst + i, static_cast<const float *>(src) + k0 + i, static_cast<size_t>(n - i) * sizeof(float));
    } else if constexpr (TYPE == GGML_TYPE_F16) {
        for (; i < n; ++i) dst[i] = _cvtsh_ss(static_cast<const ggml_fp16_t *>(src)[k0 + i]);
    } else if constexpr (TYPE == GGML_TYPE_BF16) {
        for (; i < n; ++i) {
            const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t *>(src)[k0 + i]) << 16;
            std::memcpy(dst + i, &bits, sizeof bits);
        }
    }
}

template <ggml_type TYPE>
GPTJ_AVX512 void convert(const void * src, int64_t k0, int64_t n, float * dst) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 low, high;
        load_32_weights<TYPE>(src, k0 + i, low, high);
        _mm512_storeu_ps(dst + i, low);
        _mm512_storeu_ps(dst + i + 16, high);
    }
    convert_tail<TYPE>(src, k0, i, n, dst);
}

// The AVX2 twin of convert, for CPUs without AVX-512.
template <ggml_type TYPE>
GPTJ_AVX2 void convert_avx2(const void * src, int64_t k0, int64_t n, float * dst) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 weights[4];
        load_32_weights_avx2<TYPE>(src, k0 + i, weights);
        for (int v = 0; v < 4; ++v) _mm256_storeu_ps(dst + i + kLanesAvx2 * v, weights[v]);
    }
    convert_tail<TYPE>(src, k0, i, n, dst);
}

bool has_vector_converter(ggml_type type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 || type == GGML_TYPE_Q8_0 ||
           type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_K;
}

void row_to_f32_avx512(ggml_type type, const void * src, int64_t k0, int64_t n, float * dst) {
    switch (type) {
        case GGML_TYPE_F32: return convert<GGML_TYPE_F32>(src, k0, n, dst);
        case GGML_TYPE_F16: return convert<GGML_TYPE_F16>(src, k0, n, dst);
        case GGML_TYPE_BF16: return convert<GGML_TYPE_BF16>(src, k0, n, dst);
        case GGML_TYPE_Q8_0: return convert<GGML_TYPE_Q8_0>(src, k0, n, dst);
        case GGML_TYPE_Q4_0: return convert<GGML_TYPE_Q4_0>(src, k0, n, dst);
        case GGML_TYPE_Q4_K: return convert<GGML_TYPE_Q4_K>(src, k0, n, dst);
        default: return row_to_f32_by_ggml(type, src, k0, n, dst);
    }
}

void row_to_f32_avx2(ggml_type type, const void * src, int64_t k0, int64_t n, float * dst) {
    switch (type) {
        case GGML_TYPE_F32: return convert_avx2<GGML_TYPE_F32>(src, k0, n, dst);
        case GGML_TYPE_F16: return convert_avx2<GGML_TYPE_F16>(src, k0, n, dst);
        case GGML_TYPE_BF16: return convert_avx2<GGML_TYPE_BF16>(src, k0, n, dst);
        case GGML_TYPE_Q8_0: return convert_avx2<GGML_TYPE_Q8_0>(src, k0, n, dst);
        case GGML_TYPE_Q4_0: return convert_avx2<GGML_TYPE_Q4_0>(src, k0, n, dst);
        case GGML_TYPE_Q4_K: return convert_avx2<GGML_TYPE_Q4_K>(src, k0, n, dst);
        default: return row_to_f32_by_ggml(type, src, k0, n, dst);
    }
}

}  // namespace

bool cpu_has_avx512f() {
    static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("f16c") &&
                            isa_cap() >= IsaLevel::avx512;
    return has;
}

bool row_to_f32_is_vectorized(ggml_type type) {
    return (cpu_has_avx512f() || cpu_has_avx2()) && has_vector_converter(type);
}

// AVX-512 where the CPU has it (and the cap allows it), AVX2 else, ggml's scalar code on older CPUs.
void row_to_f32(ggml_type type, const void * src, int64_t k0, int64_t n, float * dst) {
    if (cpu_has_avx512f()) return row_to_f32_avx512(type, src, k0, n, dst);
    if (cpu_has_avx2()) return row_to_f32_avx2(type, src, k0, n, dst);
    row_to_f32_by_ggml(type, src, k0, n, dst);
}

#else

bool cpu_has_avx512f() { return false; }

bool row_to_f32_is_vectorized(ggml_type) { return false; }

void row_to_f32(ggml_type type, const void * src, int64_t k0, int64_t n, float * dst) {
    row_to_f32_by_ggml(type, src, k0, n, dst);
}

#endif

}  // namespace gptj
