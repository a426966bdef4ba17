// Products of q8_0, q4_0, q4_K, q5_K and q6_K weights with a few tokens (1-16: generation and decode
// batches) by 8-bit integer dot products on AVX2 CPUs (vpmaddubsw + vpmaddwd), reading the
// weights in the file's layout.
//
// Why: on a CPU without AVX-512 (most laptops) ggml's AVX2 dot products run these products,
// one output row at a time, and for q4_0 / q4_K only after repacking the matrices at load.
// Here each activation vector loaded serves several rows (several memory streams in flight per
// thread), the q4_K sub-block scales are folded into the integer sums (one float multiply per
// 256 weights), and nothing is repacked.
//
// The activations are rounded to 8 bits first, as ggml's own dot products do: per block of 32
// for q8_0 and q4_0 (a scale each), per block of 256 for the k-quants (one scale, and the sum of
// each 32 for q4_K / q5_K's minimums, of each 16 for q6_K's offset), each in the order its kernel
// reads.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace gptj {

constexpr int kInt8Avx2MaxTokens = 16;

// Whether the AVX2 int8 kernel multiplies these weights (q8_0, q4_0, q4_K, q5_K or q6_K,
// contiguous, in the file's layout in plain memory, rows a whole number of blocks) with n_tokens tokens on this
// CPU: AVX2 present, AVX-512 absent or capped off by GPTJ_GGML_ISA.
bool int8_avx2_applies(const ggml_tensor * weights, bool in_plain_memory, int64_t n_tokens);

// Whether weights of this type, multiplied one token at a time, are faster in the file's layout
// with our kernel than repacked for ggml's (so the Model need not repack them).
bool int8_avx2_prefers_file_layout(ggml_type type);

// Which of the activations' 8-bit forms (0 .. kInt8Avx2Forms - 1) products with weights of
// this type read: products of one input whose weights share it can share that form.
constexpr int kInt8Avx2Forms = 4;
int int8_avx2_form(ggml_type weight_type);

// The activations' 8-bit form for weights of `weight_type`: x F32 [k, n] -> I8 [bytes, n]. Make
// it once per input and weight type, share it among the products reading that input.
ggml_tensor * int8_avx2_activations(ggml_context * ctx, ggml_tensor * x, ggml_type weight_type);

// ggml custom op: dst F32 [m, n] = src[0] (weights [k, m]) times src[1] (int8_avx2_activations of
// x [k, n] for src[0]'s type). Thread ith of nth takes a contiguous range of rows.
void int8_avx2_matvec_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
