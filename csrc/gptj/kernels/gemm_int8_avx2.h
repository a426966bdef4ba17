// Prompt-batch products of q4_0 and q4_K weights by 8-bit integer products on AVX2 CPUs
// (vpmaddubsw), for CPUs without AVX-512 (most laptops) or GPTJ_GGML_ISA=avx2.
//
// Why: the AVX2 f32 GEMM (gemm_avx2.h) spends one 8-lane FMA per 8 multiply-adds; vpmaddubsw
// multiplies 32 byte pairs per instruction at the same rate. It takes unsigned bytes times signed
// bytes into int16 pairs that saturate, which 4-bit weights avoid: a nibble (0-15) times an
// activation rounded to 8 bits (|q| <= 127) is at most 2 * 15 * 127 per pair, so a block of 32
// weights sums exactly in int16 (8 * 3810 < 32768) before one vpmaddwd widens it. (q8_0's
// weights would need the sign trick, one more instruction per product, which leaves little over
// the f32 kernel; they keep it.)
//
// Where the CPU has AVX-VNNI (Intel's laptops since the 12th generation), vpdpbusd does a quad's
// multiply-adds straight into int32 (one instruction for vpmaddubsw + vpaddw, and no vpmaddwd per
// block), and q8_0 takes the kernel too: its weights as unsigned bytes (w + 128, whose pairs
// vpmaddubsw would saturate), the 128 taken off through the activations' block sums.
//
// The activations are rounded to 8 bits per block of 32 with a float scale each (what ggml's own
// q4_0 products do; ggml rounds per 256 for q4_K) and packed once per input with 8 tokens in a
// ymm's lanes (4 bytes each); weight rows are unpacked to their nibbles once per block of rows and
// of k, with each block's scale and offset (q4_0: 8 x the scale; q4_K: the group's minimum), which
// meets the activations' block sums. batch_matmul() decides when to use it.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace gptj {

// Whether this kernel multiplies these weights (q4_0 or q4_K, and q8_0 with AVX-VNNI; contiguous,
// in the file's layout in plain memory, rows a whole number of blocks) on this CPU: AVX2 present,
// AVX-512 absent or capped off by GPTJ_GGML_ISA, the kernel switched on.
bool int8_gemm_avx2_applies(const ggml_tensor * weights, bool in_plain_memory);

// On by default on AVX2-only CPUs; off, those batches take the f32 AVX2 GEMM or ggml's (for
// side-by-side measurements and tests). Applies to graphs built afterwards.
void set_int8_gemm_avx2_enabled(bool enabled);
bool int8_gemm_avx2_available();

// Whether it uses AVX-VNNI's vpdpbusd (the CPU has it, switched on: the default); off, the
// vpmaddubsw kernel runs, as on an AVX2 CPU without AVX-VNNI. Read when a product runs.
void set_int8_gemm_avx_vnni_enabled(bool enabled);
bool int8_gemm_avx_vnni_available();

// x (F32 [k, n_tokens], k a multiple of 32) rounded to 8 bits per block of 32 and packed for the
// kernel, by a custom op: I8 bytes for int8_avx2_padded_tokens(n_tokens) tokens. Make it once per
// input, share it among the products reading that input.
ggml_tensor * pack_int8_avx2_activations(ggml_context * ctx, ggml_tensor * x);
inline int64_t int8_avx2_padded_tokens(int64_t n_tokens) { return (n_tokens + 7) / 8 * 8; }

// ggml custom op: dst = Yt F32 [n_pad, m] = src[0] (weights [k, m]) times src[1]
// (pack_int8_avx2_activations of x [k, n]). userdata, if not null, is a ReleasePages (memory.h)
// called with each thread's rows of src[0] when it is done.
void int8_gemm_avx2_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
