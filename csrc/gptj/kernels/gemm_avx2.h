// The AVX2 + FMA f32 GEMM for prompt batches on CPUs without AVX-512 (most laptops and AMD
// before Zen 4): the counterpart of gemm_avx512.h, with the same contract, so that batch_matmul
// (matmul.h) picks one or the other by what the CPU has.
//
// Why: ggml's prebuilt AVX2 kernels round the activations (to f16, or to 8 bits per block) and
// compute every output as a separate dot product, reading each weight once per token tile of
// 1-4 tokens; converting a block of weights to f32 once and reusing it for every token of the
// batch from cache turns the product compute-bound on FMAs (see gemm_avx2.cpp for the blocking).
#pragma once

#include "ggml.h"

namespace gptj {

// The activations x (F32 [k, n_tokens], as ggml_mul_mat takes them) repacked for gemm_avx2_task:
// tiles of up to 24 tokens, each tile's values for one k contiguous, padded
// with zeros to whole vectors. Made once per input and shared by every product that reads it.
// (Xt's plain rows, 2 KiB apart at 512 tokens, put a tile's 256 k rows in a few L1 sets, which
// evicted one another: 40 -> 43.5 tok/s on a 512-token f16 prompt, 1 thread.)
ggml_tensor * pack_tokens_avx2(ggml_context * ctx, ggml_tensor * x);

// ggml custom op: dst = Yt F32 [n_tokens, m] = src[0] (weights W [k, m], contiguous, any type
// row_to_f32 reads) times src[1] (pack_tokens_avx2 of the activations). Thread ith of nth computes
// a contiguous range of W's rows for every token. userdata, if not null, is a ReleasePages
// (memory.h) called with each thread's rows of src[0] when it is done with them. Requires AVX2,
// FMA and F16C (cpu_has_avx2()).
void gemm_avx2_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
