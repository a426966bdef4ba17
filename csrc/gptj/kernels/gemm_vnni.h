// Prompt-batch products of q8_0, q4_0 and q4_K weights by 8-bit integer dot products
// (AVX512-VNNI's vpdpbusd) where the CPU has them and AMX is off or missing.
//
// Why: the bf16 GEMM (gemm_avx512_bf16.h) multiplies 32 pairs per instruction and transformers'
// bfloat16 (oneDNN) runs the same arithmetic at about the same speed: on a 2-core Zen 4 both
// reach ~70% of the vdpbf16ps peak, so no bf16 kernel can be much faster than transformers.
// vpdpbusd multiplies 64 byte pairs per instruction at the same rate. The activations are
// rounded to 8 bits per block of 32, symmetric, with a float scale each (what ggml's own q8_0 /
// q4_0 dot products and llamafile's sgemm do for these types; ggml rounds per 256 for q4_K), so
// each 32-weight block (q4_K: group) of a row meets a token's block in exact integer arithmetic
// before the two scales apply; q4_K's minimums meet the activations' block sums in f32.
//
// Layouts: the activations are packed once per input with tokens in the vector lanes (16 per
// zmm, 4 bytes each); weight rows are unpacked to signed bytes once per block of rows and of k,
// then serve every tile of tokens. batch_matmul() decides when to use it.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace gptj {

// Whether this kernel multiplies these weights (q8_0, q4_0 or q4_K, contiguous, in the file's
// layout in plain memory, rows a whole number of blocks) on this CPU: AVX512-VNNI present and not capped
// off by GPTJ_GGML_ISA, the kernel switched on.
bool vnni_gemm_applies(const ggml_tensor * weights, bool in_plain_memory);
bool vnni_gemm_available();

// On by default where the CPU has VNNI; off, those batches take the bf16 or f32 GEMM (for
// side-by-side measurements and tests). Applies to graphs built afterwards.
void set_vnni_gemm_enabled(bool enabled);

// x (F32 [k, n_tokens], k a multiple of 32) rounded to 8 bits per block of 32 and packed for the
// kernel, by a custom op: I8 [vnni_packed_bytes(k, n_pad)] with n_pad = n_tokens rounded up to
// 16. Make it once per input, share it among the products reading that input.
ggml_tensor * pack_vnni_activations(ggml_context * ctx, ggml_tensor * x);
inline int64_t vnni_padded_tokens(int64_t n_tokens) { return (n_tokens + 15) / 16 * 16; }

// ggml custom op: dst = Yt F32 [n_pad, m] = src[0] (weights [k, m]) times src[1]
// (pack_vnni_activations of x [k, n]). userdata, if not null, is a ReleasePages (memory.h) called
// with each thread's rows of src[0] when it is done.
void vnni_gemm_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
