// The block layouts of GGUF's quantized types our kernels read directly (fixed by the file
// format), shared by the AVX-512 and AVX2 kernels.
#pragma once

#include <cstdint>
#include <cstring>

#include "ggml.h"

namespace gptj {

// GGUF's q8_0 and q4_0 blocks (fixed by the file format): 32 weights and one f16 scale.
struct BlockQ8_0 {
    ggml_fp16_t scale;
    int8_t values[32];
};
struct BlockQ4_0 {
    ggml_fp16_t scale;
    uint8_t nibbles[16];  // weight j in the low nibble of byte j, weight 16 + j in the high one; minus 8
};
// q4_K: 256 weights in 8 groups of 32; group g's weight is scale_g * nibble - min_g, with the
// 6-bit scale_g and min_g (packed in `scales`) multiplied by the f16 `scale` and `min_scale`.
// Groups 2i and 2i + 1 share the 32 bytes nibbles[32 i ..]: low nibbles, then high ones.
struct BlockQ4_K {
    ggml_fp16_t scale;
    ggml_fp16_t min_scale;
    uint8_t scales[12];
    uint8_t nibbles[128];
};
// q5_K: q4_K's groups, scales and nibbles, each weight's fifth bit (worth 16) in `high`: group g's
// weight l in bit g of high[l].
struct BlockQ5_K {
    ggml_fp16_t scale;
    ggml_fp16_t min_scale;
    uint8_t scales[12];
    uint8_t high[32];
    uint8_t nibbles[128];
};
// q6_K: 256 weights in 16 groups of 16, weight i = scale * scales[i / 16] * (q_i - 32), q_i 6 bits:
// its low 4 bits in `low`, its top 2 in `high`. Per half h of 128 weights (low + 64 h, high + 32 h),
// for l < 32: weight l in low[l]'s low nibble and bits 0-1 of high[l]; weight 32 + l in low[32 + l]'s
// low nibble and bits 2-3 of high[l]; weights 64 + l and 96 + l in the high nibbles of low[l] and
// low[32 + l], with bits 4-5 and 6-7 of high[l].
struct BlockQ6_K {
    uint8_t low[128];
    uint8_t high[64];
    int8_t scales[16];
    ggml_fp16_t scale;
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 &&
                  sizeof(BlockQ6_K) == 210,
              "GGUF block layouts");

// Group g's 6-bit scale and min: groups 0-3 in the low 6 bits of bytes g and g + 4; groups 4-7
// in the nibbles of byte g + 4 with their top 2 bits in the top bits of bytes g - 4 and g.
inline void q4_k_scale_min(const uint8_t * scales, int g, int & scale, int & min) {
    if (g < 4) {
        scale = scales[g] & 63;
        min = scales[g + 4] & 63;
    } else {
        scale = (scales[g + 4] & 0xF) | ((scales[g - 4] >> 6) << 4);
        min = (scales[g + 4] >> 4) | ((scales[g] >> 6) << 4);
    }
}

// All 8 groups' 6-bit scales and mins at once, one byte each (group g in byte g), from the 12
// packed bytes: the same bits as q4_k_scale_min, four groups at a time in 32-bit words.
inline void q4_k_scale_min_bytes(const uint8_t * packed, uint64_t & scales, uint64_t & mins) {
    uint32_t a, b, c;
    std::memcpy(&a, packed, 4);
    std::memcpy(&b, packed + 4, 4);
    std::memcpy(&c, packed + 8, 4);
    const uint32_t scales_low = a & 0x3F3F3F3Fu, mins_low = b & 0x3F3F3F3Fu;
    const uint32_t scales_high = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
    const uint32_t mins_high = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
    scales = scales_low | uint64_t(scales_high) << 32;
    mins = mins_low | uint64_t(mins_high) << 32;
}

// The 8 groups' scales and minimums of a q4_K block as floats (the 6-bit ones times the block's
// f16 scale and min_scale): group g's weight is scales[g] * nibble - mins[g].
inline void q4_k_group_scales(const BlockQ4_K & block, float * scales, float * mins) {
    uint64_t scale_bytes, min_bytes;
    q4_k_scale_min_bytes(block.scales, scale_bytes, min_bytes);
    const float d = ggml_fp16_to_fp32(block.scale), d_min = ggml_fp16_to_fp32(block.min_scale);
    for (int g = 0; g < 8; ++g) {
        scales[g] = d * static_cast<float>((scale_bytes >> (8 * g)) & 0xFF);
        mins[g] = d_min * static_cast<float>((min_bytes >> (8 * g)) & 0xFF);
    }
}

}  // namespace gptj
