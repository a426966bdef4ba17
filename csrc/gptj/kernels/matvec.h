// Products of a weight matrix with a few tokens' activations (generation evaluates one token
// at a time), by our AVX-512 kernel: each weight is converted to f32 once and multiplied with
// every token's f32 activations.
//
// Why: ggml's CPU kernels first round the activations to the weight's dot type (f16 for f16
// weights, 8-bit blocks for q8_0) and, in the prebuilt AVX2 wheel, its q8_0 dot product is
// compute-bound: 20 GB/s of weights on this machine where memory gives 30+.
#pragma once

#include <algorithm>
#include <cstdint>

#include "ggml.h"

namespace gptj {

// The most tokens a matvec product takes; longer batches go to batch_matmul's kernel. Up to
// kMatvecPassTokens they are multiplied in one pass over the weights, held in registers; more
// take a pass per kMatvecPassTokens over each block of rows while it is in cache.
constexpr int kMatvecMaxTokens = 16;
constexpr int kMatvecPassTokens = 8;

// The weight types our kernel multiplies faster than ggml's (4-layer GPT-J-6B-shaped, one token,
// ms/token ours vs ggml's: f16 71-74 vs 76, q8_0 47.5 vs 64, q4_0 49 vs 68 (ggml's repacked
// q4_0: 42, which stays); q4_K is not among them: 70 vs ggml's 49, and 28 repacked).
bool matvec_handles(ggml_type type);

// The output rows [first, end) thread ith of nth computes in a matrix-vector product of m rows:
// runs of 16, so that no two threads write the same cache line of y (first == end: none).
struct RowRange {
    int64_t first, end;
};
inline RowRange thread_rows(int64_t m, int ith, int nth) {
    const int64_t runs = (m + 15) / 16;
    return {runs * ith / nth * 16, std::min(m, runs * (ith + 1) / nth * 16)};
}

// Covers rows [first_row, end_row) x n_tokens tokens with pass(first, end, first_token, tokens):
// one pass when n_tokens <= pass_tokens; otherwise, for each block of pass_rows rows (kept in L2
// while it is reused), a pass per pass_tokens tokens, so memory still delivers each weight once.
template <typename Pass>
void in_passes(int64_t first_row, int64_t end_row, int n_tokens, int pass_tokens, int64_t pass_rows, Pass pass) {
    if (n_tokens <= pass_tokens) {
        pass(first_row, end_row, 0, n_tokens);
        return;
    }
    for (int64_t row = first_row; row < end_row; row += pass_rows) {
        const int64_t rows_end = std::min(end_row, row + pass_rows);
        for (int t = 0; t < n_tokens; t += pass_tokens) pass(row, rows_end, t, std::min(pass_tokens, n_tokens - t));
    }
}

// ggml custom op: dst F32 [m, n] = src[0] (weights [k, m], a type matvec_handles)
// times src[1] (F32 [k, n], contiguous rows), n <= kMatvecMaxTokens. Thread ith of nth takes
// a contiguous range of rows.
void matvec_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
