// Products of q8_0, q4_0 and q4_K weights with a few tokens (2-16: several streams decoded
// together, prompt lookup's drafts) by 8-bit integer dot products (AVX512-VNNI's vpdpbusd),
// where the CPU has them.
//
// Why: with every weight read once for all the streams, the f32 matrix-vector kernel (matvec.h)
// is bound by its arithmetic: a 16-lane FMA per 16 weights per token. vpdpbusd multiplies 64
// byte pairs per instruction, so rounding the activations to 8 bits per block of 32 (as ggml's
// q8_0 dot product does) moves the bound back towards the memory bus. 4-layer 6B-shaped q8_0,
// 1 thread, CPU ms per evaluation, int8 vs f32 kernel (AMX from 9 tokens): 4 tokens 124 vs 167,
// 8 tokens 128 vs 234, 16 tokens 177 vs 195; 2 tokens about equal. One token takes
// matvec_int8_token.h (here 7 of the 8 token slots would idle). q4_K in the file's layout, 4-layer
// 6B-shaped, 2 threads, ms per evaluation against ggml's repacked q4_K: 2 tokens 91 vs 82, 4 tokens
// 95 vs 94, 8 tokens 103-107 vs 154-174, 16 tokens 164 vs 215-288.
#pragma once

#include "ggml.h"

namespace gptj {

// The fewest and most tokens a product sends to the int8 kernel.
constexpr int kInt8MatvecMinTokens = 2;
constexpr int kInt8MatvecMaxTokens = 16;

// Whether this CPU has AVX512-VNNI (with AVX512F/BW), checked once at run time.
bool cpu_has_avx512vnni();

// On by default where the CPU has VNNI; off, those products take the f32 matrix-vector kernel
// (for side-by-side measurements and tests). Applies to graphs built afterwards.
void set_int8_matvec_enabled(bool enabled);
bool int8_matvec_enabled();

// Whether the int8 kernel multiplies these weights (q8_0, q4_0 or q4_K, contiguous, in the file's layout in
// plain memory) with n_tokens tokens on this CPU, switch on.
bool int8_matvec_applies(const ggml_tensor * weights, bool in_plain_memory, int64_t n_tokens);

// ggml op building the activations' int8 form: x F32 [k, n] (k a multiple of 32, n <= 16) ->
// I8 [int8_activation_bytes(k), groups of 8 tokens]. Make it once per input, share it among the
// products reading that input.
ggml_tensor * int8_activations(ggml_context * ctx, ggml_tensor * x);

// ggml custom op: dst F32 [m, n] = src[0] (q8_0, q4_0 or q4_K weights [k, m]) times src[1] (int8_activations
// of x [k, n]); n is dst->ne[1]. Thread ith of nth takes a contiguous range of rows.
void int8_matvec_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
