// Rounding to bf16 for the kernels that multiply bf16 pairs (AMX tiles, AVX512-BF16's
// vdpbf16ps): weight rows straight from the file's type, and the activations packed in the
// pair layout both read. Needs AVX512-BF16 (callers check bf16_pairs_available()).
#pragma once

#include <cstdint>

#include "ggml.h"

namespace gptj {

// Whether this CPU has AVX-512F and AVX512-BF16 (and the compiler could build these helpers).
bool bf16_pairs_available();

// Weights k0 .. k0 + n (n a multiple of 32) of a row of `type` rounded to bf16 into hi; with lo
// not null, lo = bf16(weight - hi) too (hi + lo holds an f16 weight exactly). scratch: n floats,
// for the types converted through f32 (ggml's dequantizers).
void row_to_bf16(ggml_type type, const void * row, int64_t k0, int64_t n, float * scratch, uint16_t * hi, uint16_t * lo);

// x (F32 [k, n_tokens], k a multiple of 32) rounded to bf16 in pairs, by a custom op: BF16
// [2 * n_pad, k / 2], row p holding, for each token n < n_pad, activations 2p and 2p + 1 (AMX's
// "VNNI" layout for B); n_pad = n_tokens rounded up to 16, zeros past n_tokens. With `split`, k
// rows: after the k / 2 rows of hi, the residuals bf16(x - hi) in the same layout.
ggml_tensor * pack_bf16_pairs(ggml_context * ctx, ggml_tensor * x, bool split);

}  // namespace gptj
