// The AVX-512 f32 GEMM for prompt batches: each weight is converted to f32 once per row block
// and reused by every token of the batch in a register-blocked kernel (matmul.h says why and
// when it runs). It reads and writes the transposes of ggml's layouts, which transpose_f32 makes.
#pragma once

#include "ggml.h"

namespace gptj {

// ggml custom op: dst = Yt F32 [n_tokens, m] = src[0] (weights W [k, m], contiguous, any type
// row_to_f32 reads) times src[1] (Xt F32 [n_tokens, k]: the activations transposed). Thread ith
// of nth computes a contiguous range of W's rows for every token. userdata, if not null, is a
// ReleasePages (memory.h) called with each thread's rows of src[0] when it is done with them.
// Requires AVX-512F (cpu_has_avx512f()).
void gemm_avx512_task(ggml_tensor * dst, int ith, int nth, void * userdata);

// a (F32 [n0, n1], rows contiguous; a view may pad them) transposed into a new F32 [n1, n0], by
// a custom op that copies 32 x 32 blocks on every thread (ggml_cont of a transposed view copies
// element by element: 5% of a prompt's time).
ggml_tensor * transpose_f32(ggml_context * ctx, ggml_tensor * a);

}  // namespace gptj
