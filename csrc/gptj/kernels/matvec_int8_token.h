// Products of q8_0, q4_0 and q4_K weights with one token (generation) by 8-bit integer dot products
// on AVX512-VNNI, reading the weights in the file's layout.
//
// Why: one token at a time the f32 matrix-vector kernel (matvec.h) converts every weight to f32
// and spends a 16-lane FMA per 16 weights: on 4-bit weights that is more work than the memory
// bus delivers, so ggml's repacked q4_0 kernel beat it and every q4_0 model was copied into
// ggml's interleaved layout at load (seconds for GPT-J-6B). Here the activations are rounded to
// 8 bits per block of 32 once per input (as ggml's q8_0 dot product does), one vpdpbusd
// multiplies 64 weight bytes, and a zmm holds two q8_0 blocks or four q4_0 blocks side by side:
// their f16 scales come out of the same bytes with one vpermw. Nothing is repacked.
//
// The 2-16 token kernel (matvec_int8.h) keeps its own form: 8 token slots per vpdpbusd, which
// leaves 7 of 8 slots idle for one token.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace gptj {

// The most tokens a product sends to this kernel; more take the 8-token-slot kernel (matvec_int8.h).
constexpr int kInt8TokenMaxTokens = 4;

// Whether this kernel multiplies these weights (q8_0, q4_0 or q4_K, contiguous, in the file's
// layout in plain memory, rows a whole number of its units: 64 weights for q8_0, 128 for q4_0,
// 256 for q4_K) with
// n_tokens tokens on this CPU: 1-kInt8TokenMaxTokens tokens, AVX512-VNNI present and not capped off, the int8
// kernels switched on (set_int8_matvec_enabled).
bool int8_token_applies(const ggml_tensor * weights, bool in_plain_memory, int64_t n_tokens);

// Which of the activations' forms (0 .. kInt8TokenForms - 1) products with weights of this type
// read: products of one input whose weights share it can share that form.
constexpr int kInt8TokenForms = 3;
int int8_token_form(ggml_type weight_type);

// The activations' 8-bit form for weights of `weight_type`: x F32 [k, n] -> I8 [bytes, n].
ggml_tensor * int8_token_activations(ggml_context * ctx, ggml_tensor * x, ggml_type weight_type);

// ggml custom op: dst F32 [m, n] = src[0] (weights [k, m]) times src[1] (int8_token_activations
// of x for src[0]'s type). Thread ith of nth takes a contiguous range of rows.
void int8_token_matvec_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
