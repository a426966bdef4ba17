#include "gptj/kernels/gemm_amx.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gptj/kernels/bf16_pack.h"
#include "gptj/kernels/dequantize.h"
#include "gptj/kernels/isa.h"

// AMX and AVX512-BF16 intrinsics: GCC 11+, Clang 12+ (older compilers build without this kernel).
#if defined(__clang__)
#define GPTJ_COMPILER_HAS_AMX (__clang_major__ >= 12)
#elif defined(__GNUC__)
#define GPTJ_COMPILER_HAS_AMX (__GNUC__ >= 11)
#else
#define GPTJ_COMPILER_HAS_AMX 0
#endif

#if defined(__x86_64__) && defined(__linux__) && GPTJ_COMPILER_HAS_AMX
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gptj/memory.h"

#define GPTJ_TARGET_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bf16,f16c")))

namespace gptj {
namespace {

// Tiles: C (f32 16 x 16) in tmm0-3 as a 2 x 2 block of 32 weight rows x 32 tokens; A (weights,
// 16 rows x 32 bf16) in tmm4-5; B (activations, 16 pairs of k x 16 tokens x 2 bf16) in tmm6-7.
struct alignas(64) TileConfig {
    uint8_t palette = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t bytes_per_row[16] = {};
    uint8_t rows[16] = {};
};

TileConfig make_tile_config() {
    TileConfig config;
    for (int t = 0; t < 8; ++t) {
        config.bytes_per_row[t] = 64;
        config.rows[t] = 16;
    }
    return config;
}

bool request_amx_permission() {
    // Linux hands out the AMX tile state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
    constexpr int kArchReqXcompPerm = 0x1023;
    constexpr int kXfeatureXtiledata = 18;
    return ::syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

constexpr int64_t kKBlock = 256;  // weights converted to bf16 per row block and step: 32 KiB (hi + lo) for L1

}  // namespace

bool amx_available() {
    static const bool available = __builtin_cpu_supports("amx-bf16") && __builtin_cpu_supports("avx512bf16") &&
                                  cpu_has_avx512f() && isa_cap() >= IsaLevel::amx &&
                                  request_amx_permission();
    return available;
}

// dst: Yt F32 [n_pad, m]; src[0]: weights [k, m]; src[1]: the packed activations.
GPTJ_TARGET_AMX void amx_matmul_task(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * packed = dst->src[1];
    const int64_t k = w->ne[0], m = w->ne[1], n_pad = dst->ne[0];
    const int64_t row_blocks = m / 32;
    const int64_t first = row_blocks * ith / nth * 32, end = row_blocks * (ith + 1) / nth * 32;
    if (first >= end) return;

    static const TileConfig config = make_tile_config();
    _tile_loadconfig(&config);
    thread_local std::vector<float> f32_rows;
    thread_local std::vector<uint16_t> bf16_rows;
    f32_rows.resize(static_cast<size_t>(kKBlock));
    bf16_rows.resize(static_cast<size_t>(2 * 32 * kKBlock));
    const auto * w_data = static_cast<const char *>(w->data);
    const auto * b_data = static_cast<const char *>(packed->data);
    auto * yt = static_cast<float *>(dst->data);
    const int64_t b_stride = n_pad * 4;   // bytes per packed row (one k pair, every token)
    const int64_t y_stride = n_pad * 4;   // bytes per Yt row

    const bool split = packed->ne[1] == k;  // f16 weights: hi + lo parts of both operands
    const char * b_low_data = b_data + k / 2 * b_stride;
    for (int64_t row = first; row < end; row += 32) {
        for (int64_t k0 = 0; k0 < k; k0 += kKBlock) {
            const int64_t k_len = std::min(kKBlock, k - k0);
            uint16_t * a_high = bf16_rows.data();
            uint16_t * a_low = a_high + 32 * k_len;
            const size_t segment_offset = ggml_row_size(w->type, k0), segment_bytes = ggml_row_size(w->type, k_len);
            for (int r = 0; r < 32; ++r) {
                // The same stretch of the next block's row, fetched while this block computes:
                // stretches of a few cache lines are too short for the hardware prefetchers.
                if (row + 32 < end) {
                    const char * next = w_data + (row + 32 + r) * w->nb[1] + segment_offset;
                    for (size_t line = 0; line < segment_bytes; line += 64) _mm_prefetch(next + line, _MM_HINT_T2);
                }
                row_to_bf16(w->type, w_data + (row + r) * w->nb[1], k0, k_len, f32_rows.data(), a_high + r * k_len,
                                split ? a_low + r * k_len : nullptr);
            }
            const int64_t a_stride = k_len * 2;
            if (split) {
                // hi*hi + hi*lo + lo*hi for 32 rows x 16 tokens: C in tmm0 and tmm2.
                for (int64_t n0 = 0; n0 < n_pad; n0 += 16) {
                    float * c = yt + row * n_pad + n0;
                    if (k0 == 0) {
                        _tile_zero(0);
                        _tile_zero(2);
                    } else {
                        _tile_loadd(0, c, y_stride);
                        _tile_loadd(2, c + 16 * n_pad, y_stride);
                    }
                    for (int64_t kk = 0; kk < k_len; kk += 32) {
                        const int64_t b_offset = (k0 + kk) / 2 * b_stride + n0 * 4;
                        _tile_loadd(4, a_high + kk, a_stride);
                        _tile_loadd(5, a_high + 16 * k_len + kk, a_stride);
                        _tile_loadd(6, b_data + b_offset, b_stride);
                        _tile_loadd(7, b_low_data + b_offset, b_stride);
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_dpbf16ps(2, 5, 6);
                        _tile_dpbf16ps(0, 4, 7);
                        _tile_dpbf16ps(2, 5, 7);
                        _tile_loadd(4, a_low + kk, a_stride);
                        _tile_loadd(5, a_low + 16 * k_len + kk, a_stride);
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_dpbf16ps(2, 5, 6);
                    }
                    _tile_stored(0, c, y_stride);
                    _tile_stored(2, c + 16 * n_pad, y_stride);
                }
                continue;
            }
            for (int64_t n0 = 0; n0 < n_pad; n0 += 32) {
                const bool two = n0 + 16 < n_pad;  // a second 16-token column of tiles
                float * c = yt + row * n_pad + n0;
                if (k0 == 0) {
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                } else {
                    _tile_loadd(0, c, y_stride);
                    _tile_loadd(2, c + 16 * n_pad, y_stride);
                    if (two) {
                        _tile_loadd(1, c + 16, y_stride);
                        _tile_loadd(3, c + 16 * n_pad + 16, y_stride);
                    }
                }
                for (int64_t kk = 0; kk < k_len; kk += 32) {
                    _tile_loadd(4, a_high + kk, a_stride);
                    _tile_loadd(5, a_high + 16 * k_len + kk, a_stride);
                    const char * b = b_data + (k0 + kk) / 2 * b_stride + n0 * 4;
                    _tile_loadd(6, b, b_stride);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(2, 5, 6);
                    if (two) {
                        _tile_loadd(7, b + 64, b_stride);
                        _tile_dpbf16ps(1, 4, 7);
                        _tile_dpbf16ps(3, 5, 7);
                    }
                }
                _tile_stored(0, c, y_stride);
                _tile_stored(2, c + 16 * n_pad, y_stride);
                if (two) {
                    _tile_stored(1, c + 16, y_stride);
                    _tile_stored(3, c + 16 * n_pad + 16, y_stride);
                }
            }
        }
    }
    _tile_release();
    if (userdata != nullptr) reinterpret_cast<ReleasePages>(userdata)(w_data + first * w->nb[1], w_data + end * w->nb[1]);
}

}  // namespace gptj

#else

namespace gptj {
bool amx_available() { return false; }
void amx_matmul_task(ggml_tensor *, int, int, void *) {}
}  // namespace gptj

#endif
