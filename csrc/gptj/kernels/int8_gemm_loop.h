// The loop the 8-bit prompt GEMMs (gemm_vnni.h on AVX512-VNNI, gemm_int8_avx2.h on AVX2) run around
// their micro-kernels: each thread's rows in blocks of one micro-kernel's rows, k cut into blocks
// whose slice of the packed activations stays in L2, each block of rows unpacked once per k block and
// then multiplied with every tile of tokens.
//
// The packed activations, for n_pad tokens, are the same in both: k / 4 rows of n_pad int32 (each
// token's 8-bit activations 4p .. 4p + 3), then k / 32 rows of n_pad floats (each token's scale per
// block of 32), then k / 32 rows of n_pad floats (the scale times the block's sum of activations).
#pragma once

#include <algorithm>
#include <cstdint>

#include "ggml.h"
#include "gptj/memory.h"

namespace gptj {

struct Int8GemmBlocking {
    int rows;                    // rows per micro-kernel call and per unpacked block
    int64_t tile_tokens;         // tokens per micro-kernel call (whole vectors)
    int64_t lanes;               // tokens per vector
    int64_t packed_block_bytes;  // packed activations a k block may span
};

// The packed activations' size in bytes for k weights per row and n_pad tokens.
inline int64_t int8_packed_bytes(int64_t k, int64_t n_pad) {
    return k * n_pad + 2 * (k / 32) * n_pad * int64_t(sizeof(float));
}

// dst = Yt F32 [n_pad, m] = src[0] (weights [k, m]) times src[1] (packed activations), thread ith of
// nth. unpack(row, k0, k_len, slot) unpacks weights k0 .. k0 + k_len of a row into a slot of the
// block (k_len whole blocks, q4_K: super-blocks); multiply(rows, vectors, k_len, quads, scales,
// sums, yt, accumulate) runs the micro-kernel on the unpacked block with `vectors` vectors of
// tokens, the pointers at the k block and the tile's first token. userdata, if not null, is a
// ReleasePages (memory.h) called with the thread's rows of src[0] when it is done.
template <class Unpack, class Multiply>
void run_int8_gemm(ggml_tensor * dst, int ith, int nth, void * userdata, const Int8GemmBlocking & blocking,
                   Unpack && unpack, Multiply && multiply) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * packed = dst->src[1];
    const int64_t k = w->ne[0], m = w->ne[1], n_pad = dst->ne[0];

    const int64_t row_blocks = (m + blocking.rows - 1) / blocking.rows;
    const int64_t first_row = row_blocks * ith / nth * blocking.rows;
    const int64_t end_row = std::min(m, row_blocks * (ith + 1) / nth * blocking.rows);
    if (first_row >= end_row) return;

    const int64_t k_align = w->type == GGML_TYPE_Q4_K ? 256 : 32;
    int64_t k_block = blocking.packed_block_bytes / n_pad;
    k_block = std::min(k, std::max(k_align, k_block / k_align * k_align));

    const auto * quads = static_cast<const int32_t *>(packed->data);
    const auto * x_scales = reinterpret_cast<const float *>(static_cast<const char *>(packed->data) + k * n_pad);
    const float * x_sums = x_scales + k / 32 * n_pad;
    auto * yt = static_cast<float *>(dst->data);

    for (int64_t k0 = 0; k0 < k; k0 += k_block) {
        const int64_t k_len = std::min(k_block, k - k0);
        for (int64_t row = first_row; row < end_row; row += blocking.rows) {
            const int n_rows = static_cast<int>(std::min<int64_t>(blocking.rows, end_row - row));
            for (int r = 0; r < n_rows; ++r) unpack(row + r, k0, k_len, r);
            for (int64_t n0 = 0; n0 < n_pad; n0 += blocking.tile_tokens) {
                const int vectors = static_cast<int>(std::min(blocking.tile_tokens, n_pad - n0) / blocking.lanes);
                multiply(n_rows, vectors, k_len, quads + k0 / 4 * n_pad + n0, x_scales + k0 / 32 * n_pad + n0,
                         x_sums + k0 / 32 * n_pad + n0, yt + row * n_pad + n0, k0 > 0);
            }
        }
    }
    if (userdata != nullptr) {
        const auto * w_data = static_cast<const char *>(w->data);
        reinterpret_cast<ReleasePages>(userdata)(w_data + first_row * w->nb[1], w_data + end_row * w->nb[1]);
    }
}

}  // namespace gptj
