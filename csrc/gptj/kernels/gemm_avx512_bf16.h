// Prompt-batch products with AVX512-BF16's vdpbf16ps (Zen 4 and 5, Intel Cooper Lake and later):
// weights and activations rounded to bf16, each instruction multiplying 16 pairs and
// accumulating in f32 -- twice the multiply-adds of an f32 FMA, the arithmetic of transformers'
// bfloat16 on the same CPU. For bf16 and quantized weights (whose rounding to bf16 is well below
// their own quantization error); f16 and f32 weights keep the f32 GEMM's accuracy
// (gemm_avx512.h). batch_matmul() decides when to use it.
#pragma once

#include "ggml.h"

namespace gptj {

// Whether this CPU has AVX512-BF16 and GPTJ_GGML_ISA allows it (avx512bf16 or amx, or unset).
bool avx512_bf16_gemm_available();

// ggml custom op: dst = Yt F32 [n_pad, m] = src[0] (weights [k, m], k a multiple of 32, any
// type row_to_bf16 reads) times src[1] (pack_bf16_pairs(x, false), bf16_pack.h). userdata, if not
// null, is a ReleasePages (memory.h) called with each thread's rows of src[0] when it is done.
void gemm_avx512_bf16_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
