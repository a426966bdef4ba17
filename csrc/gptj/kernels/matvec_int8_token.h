// Products of q8_0, q4_0, q4_K, q5_K and q6_K weights with 1-4 tokens (generation, small decode batches,
// prompt lookup's drafts) by 8-bit integer dot products on AVX512-VNNI, reading the weights in the
// file's layout.
//
// Why: one token at a time the f32 matrix-vector kernel (matvec.h) converts every weight to f32
// and spends a 16-lane FMA per 16 weights: on 4-bit weights that is more work than the memory
// bus delivers, so ggml's repacked q4_0 kernel beat it and every q4_0 model was copied into
// ggml's interleaved layout at load (seconds for GPT-J-6B). Here the activations are rounded to
// 8 bits once per input (per 32 for q8_0 / q4_0, per 256 for the k-quants, as ggml's dot products
// do), one vpdpbusd multiplies 64 weight bytes, and a zmm holds two q8_0 blocks or four q4_0
// blocks side by side: their f16 scales come out of the same bytes with one vpermw; the k-quants'
// group scales go in through vpdpwssd. Each block is unpacked once for all the tokens. Nothing is
// repacked.
//
// 5-16 tokens take matvec_int8.h: 8 token slots per vpdpbusd, which would leave most slots idle
// for fewer tokens (q5_K and q6_K, which it lacks, stay here in passes of 4 tokens).
#pragma once

#include <cstdint>

#include "ggml.h"

namespace gptj {

// The most tokens this kernel multiplies in one pass over the weights; more take the 8-token-slot
// kernel (matvec_int8.h), but for q5_K and q6_K, which it has not: their batches of up to
// kInt8TokenBatchMaxTokens come here, 4 tokens per pass over blocks of rows kept in L2, so
// memory still delivers each weight once (ggml's kernels for them were 2-4x slower at 8 tokens).
constexpr int kInt8TokenMaxTokens = 4;
constexpr int kInt8TokenBatchMaxTokens = 16;

// Whether this kernel multiplies these weights (q8_0, q4_0, q4_K, q5_K or q6_K, contiguous, in the
// file's layout in plain memory, rows a whole number of its units: 64 weights for q8_0, 128 for
// q4_0, 256 for the k-quants) with n_tokens tokens on this CPU: 1-kInt8TokenMaxTokens tokens, or
// up to kInt8TokenBatchMaxTokens where the 8-token-slot kernel does not apply (q5_K, q6_K),
// AVX512-VNNI present and not capped off, the int8 kernels switched on (set_int8_matvec_enabled).
bool int8_token_applies(const ggml_tensor * weights, bool in_plain_memory, int64_t n_tokens);

// Which of the activations' forms (0 .. kInt8TokenForms - 1) products with weights of this type
// read: products of one input whose weights share it can share that form.
constexpr int kInt8TokenForms = 4;
int int8_token_form(ggml_type weight_type);

// The activations' 8-bit form for weights of `weight_type`: x F32 [k, n] -> I8 [bytes, n].
ggml_tensor * int8_token_activations(ggml_context * ctx, ggml_tensor * x, ggml_type weight_type);

// ggml custom op: dst F32 [m, n] = src[0] (weights [k, m]) times src[1] (int8_token_activations
// of x for src[0]'s type). Thread ith of nth takes a contiguous range of rows.
void int8_token_matvec_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
