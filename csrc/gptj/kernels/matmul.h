// Which kernel computes each weight x activation product of the forward graph: our
// matrix-vector kernels for a few tokens (matvec_int8.h for q8_0 where the CPU has VNNI, matvec.h), for prompt batches our AMX kernel
// (gemm_amx.h), where AMX is absent our VNNI GEMM for q8_0 / q4_0 / q4_K (gemm_vnni.h) and AVX512-BF16 GEMM
// for other quantized and bf16 weights (gemm_avx512_bf16.h), our AVX-512 f32 GEMM (gemm_avx512.h)
// or, without AVX-512, our AVX2 int8 GEMM for q4_0 / q4_K (gemm_int8_avx2.h) and f32 one
// (gemm_avx2.h), and ggml_mul_mat everywhere else.
//
// Why: for f16 weights ggml's CPU backend rounds the activations to f16 and computes every
// output as a separate f16 dot product (ggml_vec_dot_f16, 96% of a 128-token prompt's time
// with the prebuilt AVX2 wheel). A register-blocked kernel that reuses each weight across
// the batch runs the same products in f32 several times faster, and more accurately.
#pragma once

#include "ggml.h"

namespace gptj {

// The activations of one batch, prepared once and shared by every product that reads them
// (GPT-J's q, k, v and fc_in all read the same ln_1 output).
struct MatmulInput {
    ggml_tensor * x;   // F32 [k, n_tokens], as ggml_mul_mat takes it
    ggml_tensor * xt = nullptr;  // F32 [n_tokens, k]: x transposed, for our kernel; nullptr when unused
    ggml_tensor * avx2_packed = nullptr;  // x in token tiles, for the AVX2 GEMM; nullptr when unused
    ggml_tensor * int8_avx2_packed = nullptr;  // x rounded to 8 bits for the AVX2 int8 GEMM; nullptr when unused
    ggml_tensor * amx_packed = nullptr;  // x in bf16 pairs, for the AMX kernel; nullptr when unused
    ggml_tensor * vnni_packed = nullptr;  // x rounded to 8 bits for the VNNI GEMM; nullptr when unused
    ggml_tensor * int8 = nullptr;  // x rounded to 8 bits per block, for the int8 kernel; nullptr when unused
    // x rounded to 8 bits in each form the AVX2 int8 kernel reads (int8_avx2_form); nullptr when unused
    ggml_tensor * int8_avx2[4] = {nullptr, nullptr, nullptr, nullptr};
    // x rounded to 8 bits in each form the one-token VNNI kernel reads (int8_token_form); nullptr when unused
    ggml_tensor * int8_token[4] = {nullptr, nullptr, nullptr, nullptr};
};

// Whether weights of this type, multiplied one token at a time, are faster in the file's layout
// with our kernels than repacked for ggml's on this CPU (so the Model need not repack them):
// q8_0 and q4_0 where the CPU has AVX2 without AVX-512; q8_0, q4_0 and q4_K where it has
// AVX512-VNNI (the int8 kernels on).
bool keeps_file_layout(ggml_type type);

// Whether our kernel runs products with these weights on this CPU (checked at run time: the
// extension is built for any x86-64 and uses AVX-512 or AVX2 only where the CPU has it): f32, f16,
// bf16, and quantized types in their file layout (not the matrices ggml repacked).
bool batch_matmul_supported(const ggml_tensor * weights);
// Whether our matrix-vector kernel runs products with these weights on this CPU: weights in
// plain host memory (not repacked by ggml), of a type it converts with vector code.
bool matvec_supported(const ggml_tensor * weights);

// Our kernel is on by default where the CPU can run it; off, every product is ggml_mul_mat's
// (for side-by-side measurements and tests). Applies to graphs built afterwards.
void set_batch_matmul_enabled(bool enabled);
// The prompt GEMM this CPU runs: "avx512", "avx2" (no AVX-512, or GPTJ_GGML_ISA=avx2), or "" (ggml's).
const char * batch_matmul_kernel();

// The AVX512-BF16 GEMM (gemm_avx512_bf16.h) for bf16 and quantized weights where the CPU has
// AVX512-BF16 but AMX is off or missing; off, those batches take the f32 AVX-512 kernel.
// Applies to graphs built afterwards.
void set_bf16_gemm_enabled(bool enabled);

// The AMX kernel (bf16 arithmetic) for non-f32 weights where the CPU has AMX; off, those
// batches take the f32 AVX-512 kernel. Applies to graphs built afterwards.
void set_amx_enabled(bool enabled);
// From 9 tokens (one more than the matrix-vector kernel holds in registers) AMX is faster
// where the CPU has it (see batch_matmul).
constexpr int kAmxMinTokens = 9;
// The fewest tokens a product sends to the AMX kernel (kAmxMinTokens by default). Applies to
// graphs built afterwards (for side-by-side measurements).
void set_amx_min_tokens(int n_tokens);

// The most tokens a product sends to the matrix-vector kernel (kMatvecMaxTokens by default);
// lower, the GEMMs take the longer batches. Applies to graphs built afterwards (for
// side-by-side measurements: benchmarks/batch_decode.py --compare-matvec).
void set_matvec_max_tokens(int n_tokens);

// Batches shorter than this do not take the GEMMs: up to kMatvecMaxTokens (matvec.h) they take
// the matrix-vector kernel where it applies, ggml_mul_mat otherwise (a product of a few tokens
// is memory-bound).
constexpr int kBatchMatmulMinTokens = 8;


// w [k, m] times the input [k, n_tokens] -> F32 [m, n_tokens], like ggml_mul_mat(ctx, w, x).
// `file_layout`, if not null, is w as stored in the mapped model file while w itself was
// repacked by ggml: our kernel may read that copy instead (its pages are handed back to the
// page cache as each thread finishes, so the process does not keep both copies resident).
ggml_tensor * batch_matmul(ggml_context * ctx, ggml_tensor * w, MatmulInput & input,
                           ggml_tensor * file_layout = nullptr);

}  // namespace gptj
