#include "gptj/kernels/matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "ggml-backend.h"
#include "gptj/kernels/dequantize.h"
#include "gptj/kernels/bf16_pack.h"
#include "gptj/kernels/gemm_amx.h"
#include "gptj/kernels/gemm_avx512_bf16.h"
#include "gptj/kernels/gemm_avx2.h"
#include "gptj/kernels/gemm_avx512.h"
#include "gptj/kernels/gemm_int8_avx2.h"
#include "gptj/kernels/gemm_vnni.h"
#include "gptj/kernels/isa.h"
#include "gptj/kernels/matvec.h"
#include "gptj/kernels/matvec_avx2.h"
#include "gptj/kernels/matvec_int8.h"
#include "gptj/kernels/matvec_int8_avx2.h"
#include "gptj/kernels/matvec_int8_token.h"
#include "gptj/memory.h"

namespace gptj {
namespace {

std::atomic<bool> g_enabled{true};
std::atomic<bool> g_amx_enabled{true};
std::atomic<bool> g_bf16_gemm_enabled{true};
std::atomic<int> g_matvec_max_tokens{kMatvecMaxTokens};
std::atomic<int> g_amx_min_tokens{kAmxMinTokens};

// Weights in ordinary host memory, in the file's layout (ggml's CPU_REPACK buffers, holding its
// interleaved layouts, are not "host" memory).
bool in_plain_memory(const ggml_tensor * weights) {
    return weights->buffer == nullptr || ggml_backend_buffer_is_host(weights->buffer);
}

// Where the CPU (or GPTJ_GGML_ISA) has AVX2 but no AVX-512, prompt batches take the AVX2 GEMM
// (gemm_avx2.h); shorter batches stay with ggml's kernels.
bool avx2_gemm_in_use() { return !cpu_has_avx512f() && cpu_has_avx2(); }

// A product on bf16 pairs (AMX tiles, or AVX512-BF16's vdpbf16ps): `task` computes Yt [n_pad, m]
// from the weights and input.amx_packed (packed here on first use, `split` for f16 weights),
// which is cut back to the batch's tokens and transposed to ggml's layout.
ggml_tensor * bf16_pair_product(ggml_context * ctx, ggml_custom_op_t task, ggml_tensor * weights, MatmulInput & input,
                                bool split, void * userdata) {
    const int64_t n_tokens = input.x->ne[1], m = weights->ne[1];
    if (input.amx_packed == nullptr) input.amx_packed = pack_bf16_pairs(ctx, input.x, split);
    ggml_tensor * args[] = {weights, input.amx_packed};
    const int64_t n_pad = input.amx_packed->ne[0] / 2;
    ggml_tensor * yt = ggml_custom_4d(ctx, GGML_TYPE_F32, n_pad, m, 1, 1, args, 2, task, GGML_N_TASKS_MAX, userdata);
    return transpose_f32(ctx, ggml_view_2d(ctx, yt, n_tokens, m, yt->nb[1], 0));
}

}  // namespace

void set_amx_enabled(bool enabled) { g_amx_enabled = enabled; }

void set_batch_matmul_enabled(bool enabled) { g_enabled = enabled; }

void set_bf16_gemm_enabled(bool enabled) { g_bf16_gemm_enabled = enabled; }

void set_amx_min_tokens(int n_tokens) { g_amx_min_tokens = std::max(n_tokens, 1); }

void set_matvec_max_tokens(int n_tokens) { g_matvec_max_tokens = std::clamp(n_tokens, 0, kMatvecMaxTokens); }

bool keeps_file_layout(ggml_type type) {
    const bool int8_type = type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_K;
    return int8_avx2_prefers_file_layout(type) || (int8_type && int8_matvec_enabled() && cpu_has_avx512vnni());
}

// Where the CPU lacks AVX-512 and AVX2 (or the extension was built for another architecture,
// where both checks are false), ggml does every product.
bool batch_matmul_supported(const ggml_tensor * weights) {
    if (!(cpu_has_avx512f() || avx2_gemm_in_use()) || !ggml_is_contiguous(weights)) return false;
    const ggml_type type = weights->type;
    if (type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) return true;
    // Quantized weights in their file layout (ggml's dequantizer reads them); not the ones
    // ggml repacked: ggml's kernels for those layouts stay.
    const ggml_type_traits * traits = ggml_get_type_traits(type);
    return traits->is_quantized && traits->to_float != nullptr && in_plain_memory(weights) && 256 % traits->blck_size == 0 &&
           weights->ne[0] % traits->blck_size == 0;
}

bool matvec_supported(const ggml_tensor * weights) {
    return cpu_has_avx512f() && ggml_is_contiguous(weights) && in_plain_memory(weights) && matvec_handles(weights->type);
}

const char * batch_matmul_kernel() { return cpu_has_avx512f() ? "avx512" : avx2_gemm_in_use() ? "avx2" : ""; }

ggml_tensor * batch_matmul(ggml_context * ctx, ggml_tensor * w, MatmulInput & input, ggml_tensor * file_layout) {
    ggml_tensor * x = input.x;
    const int64_t n_tokens = x->ne[1];
    const int64_t k = w->ne[0], m = w->ne[1];
    const bool ours = g_enabled && x->type == GGML_TYPE_F32 && ggml_n_dims(x) <= 2 && ggml_is_contiguous(x);
    // The copy of the weights a GEMM reads: w, or the file's layout of a matrix ggml repacked.
    ggml_tensor * weights = nullptr;
    void * userdata = nullptr;
    if (ours && batch_matmul_supported(w)) {
        weights = w;
    } else if (ours && file_layout != nullptr && batch_matmul_supported(file_layout)) {
        weights = file_layout;
        userdata = reinterpret_cast<void *>(&release_mapped_pages);
    }
    // q8_0, q4_0 and q4_K with 1-16 tokens on CPUs with AVX2 but not AVX-512 (most laptops): 8-bit
    // dot products reading the file's layout (matvec_int8_avx2.h).
    if (ours && int8_avx2_applies(w, in_plain_memory(w), n_tokens)) {
        static_assert(kInt8Avx2Forms == sizeof(input.int8_avx2) / sizeof(input.int8_avx2[0]), "one slot per form");
        ggml_tensor *& form = input.int8_avx2[int8_avx2_form(w->type)];
        if (form == nullptr) form = int8_avx2_activations(ctx, x, w->type);
        ggml_tensor * args[] = {w, form};
        return ggml_custom_4d(ctx, GGML_TYPE_F32, m, n_tokens, 1, 1, args, 2, int8_avx2_matvec_task, GGML_N_TASKS_MAX,
                              nullptr);
    }
    // q8_0, q4_0 and q4_K, 1-4 tokens, where the CPU has AVX512-VNNI: 8-bit dot products reading
    // the file's layout (matvec_int8_token.h), as fast as ggml's repacked kernels or faster.
    if (ours && int8_token_applies(w, in_plain_memory(w), n_tokens)) {
        static_assert(kInt8TokenForms == sizeof(input.int8_token) / sizeof(input.int8_token[0]), "one slot per form");
        ggml_tensor *& form = input.int8_token[int8_token_form(w->type)];
        if (form == nullptr) form = int8_token_activations(ctx, x, w->type);
        ggml_tensor * args[] = {w, form};
        return ggml_custom_4d(ctx, GGML_TYPE_F32, m, n_tokens, 1, 1, args, 2, int8_token_matvec_task, GGML_N_TASKS_MAX,
                              nullptr);
    }
    // q8_0, q4_0 and q4_K with 5-16 tokens: 8-bit dot products where the CPU has VNNI, ahead of AMX
    // and the f32 matrix-vector kernel (4-layer 6B-shaped q8_0, 1 thread, CPU ms per evaluation:
    // 8 tokens 128-147 against the f32 kernel's 234-288, 16 tokens 177-238 against AMX's 195-279).
    if (ours && int8_matvec_applies(w, in_plain_memory(w), n_tokens)) {
        if (input.int8 == nullptr) input.int8 = int8_activations(ctx, x);
        ggml_tensor * args[] = {w, input.int8};
        return ggml_custom_4d(ctx, GGML_TYPE_F32, m, n_tokens, 1, 1, args, 2, int8_matvec_task, GGML_N_TASKS_MAX,
                              nullptr);
    }
    // AMX first where it applies: its bf16 tiles multiply up to 16 tokens for about the cost of
    // reading the weights (4-layer 6B-shaped q8_0, 1 thread, CPU ms per evaluation: 8 tokens
    // 190 against the matrix-vector kernel's 234, 16 tokens 217 against 396). Unpacking q4_0
    // into tiles costs more (470-520 ms at 1-16 tokens, the matrix-vector kernel 433 at 16), so
    // q4_0 takes AMX only beyond the matrix-vector kernel's range.
    // Types our kernels convert only through ggml's scalar dequantizer (q6_K: the output matrix of
    // q4_0 files) keep ggml's dot products for decode batches too: converting 4096 x 50400 q6_K
    // weights cost ~200 ms per product of 8-16 tokens (4-layer 6B q4_0, 1 thread: 8 tokens 348 ->
    // 167 ms per evaluation).
    const bool scalar_conversion = weights != nullptr && !row_to_f32_is_vectorized(weights->type);
    const bool slow_type = w->type == GGML_TYPE_Q4_0 || scalar_conversion;
    const int amx_min_tokens = slow_type ? std::max<int>(g_amx_min_tokens, kMatvecMaxTokens + 1)
                                         : g_amx_min_tokens.load();
    const bool amx = weights != nullptr && g_amx_enabled && weights->type != GGML_TYPE_F32 &&
                     n_tokens >= amx_min_tokens && k % 32 == 0 && m % 32 == 0 && amx_available();
    if (!amx && ours && n_tokens <= g_matvec_max_tokens && matvec_supported(w)) {
        ggml_tensor * args[] = {w, x};
        return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], n_tokens, 1, 1, args, 2, matvec_task, GGML_N_TASKS_MAX,
                              nullptr);
    }
    if (ours && n_tokens <= g_matvec_max_tokens && matvec_avx2_supported(w, in_plain_memory(w))) {
        ggml_tensor * args[] = {w, x};
        return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], n_tokens, 1, 1, args, 2, matvec_avx2_task,
                              GGML_N_TASKS_MAX, nullptr);
    }
    // A matrix ggml repacked keeps ggml's kernels up to decode-batch sizes: its interleaved
    // layout suits them, and our kernels would read the file's copy, whose pages go back to the
    // page cache after every product (mapped again at the next step).
    const bool repacked = weights != nullptr && weights != w;
    const bool decode_batch = n_tokens <= kMatvecMaxTokens;
    if (weights == nullptr ||
        (!amx && (n_tokens < kBatchMatmulMinTokens || ((repacked || scalar_conversion) && decode_batch)))) {
        return ggml_mul_mat(ctx, w, x);
    }
    // AVX2 GEMMs: prompt batches only (more than kMatvecMaxTokens tokens); decode batches keep
    // ggml's kernels, whose dot products read each weight once for the few tokens. q4_0 and q4_K
    // (and q8_0 with AVX-VNNI) take 8-bit products (gemm_int8_avx2.h), reading the file's layout
    // (for a matrix ggml repacked, the mapped file's copy): 1.4-1.6x ggml's repacked int8 GEMM for q4_K,
    // which had matched the f32 GEMM on the file's copy (4-layer 6B-shaped, 2 threads, f32 / ggml's:
    // q4_K pp128 0.88x, pp512 0.98x). Other repacked matrices keep ggml's GEMMs.
    if (avx2_gemm_in_use() && !decode_batch && int8_gemm_avx2_applies(weights, in_plain_memory(weights))) {
        if (input.int8_avx2_packed == nullptr) input.int8_avx2_packed = pack_int8_avx2_activations(ctx, x);
        ggml_tensor * args[] = {weights, input.int8_avx2_packed};
        ggml_tensor * yt = ggml_custom_4d(ctx, GGML_TYPE_F32, int8_avx2_padded_tokens(n_tokens), m, 1, 1, args, 2,
                                          int8_gemm_avx2_task, GGML_N_TASKS_MAX, userdata);
        return transpose_f32(ctx, ggml_view_2d(ctx, yt, n_tokens, m, yt->nb[1], 0));
    }
    if (avx2_gemm_in_use() && (decode_batch || repacked)) return ggml_mul_mat(ctx, w, x);
    // f16 weights: hi + lo bf16 halves of both operands, for f32-like accuracy (gemm_amx.h).
    const bool split = weights->type == GGML_TYPE_F16;
    // The packed input serves one precision; a product wanting the other (a mixed-type
    // model) takes the f32 kernel.
    const bool packed_fits = input.amx_packed == nullptr || (input.amx_packed->ne[1] == k) == split;
    if (amx && packed_fits) return bf16_pair_product(ctx, amx_matmul_task, weights, input, split, userdata);
    // q8_0, q4_0 and q4_K on AVX512-VNNI without AMX: 8-bit dot products, twice the bf16 GEMM's
    // multiply-adds per instruction (gemm_vnni.h).
    if (vnni_gemm_applies(weights, in_plain_memory(weights))) {
        if (input.vnni_packed == nullptr) input.vnni_packed = pack_vnni_activations(ctx, x);
        ggml_tensor * args[] = {weights, input.vnni_packed};
        ggml_tensor * yt = ggml_custom_4d(ctx, GGML_TYPE_F32, vnni_padded_tokens(n_tokens), m, 1, 1, args, 2,
                                          vnni_gemm_task, GGML_N_TASKS_MAX, userdata);
        return transpose_f32(ctx, ggml_view_2d(ctx, yt, n_tokens, m, yt->nb[1], 0));
    }
    if (avx2_gemm_in_use()) {
        if (input.avx2_packed == nullptr) input.avx2_packed = pack_tokens_avx2(ctx, x);
        ggml_tensor * args[] = {weights, input.avx2_packed};
        ggml_tensor * yt = ggml_custom_4d(ctx, GGML_TYPE_F32, n_tokens, m, 1, 1, args, 2, gemm_avx2_task,
                                          GGML_N_TASKS_MAX, userdata);
        return transpose_f32(ctx, yt);
    }
    // bf16 and quantized weights on AVX512-BF16 without AMX: bf16 pairs, twice the f32 kernel's
    // multiply-adds per instruction, on amx_packed's non-split form.
    const bool bf16_pairs = g_bf16_gemm_enabled && !split && weights->type != GGML_TYPE_F32 && k % 32 == 0 &&
                            avx512_bf16_gemm_available();
    if (bf16_pairs && packed_fits) return bf16_pair_product(ctx, gemm_avx512_bf16_task, weights, input, split, userdata);
    if (input.xt == nullptr) input.xt = transpose_f32(ctx, x);
    ggml_tensor * args[] = {weights, input.xt};
    ggml_tensor * yt = ggml_custom_4d(ctx, GGML_TYPE_F32, n_tokens, w->ne[1], 1, 1, args, 2, gemm_avx512_task,
                                      GGML_N_TASKS_MAX, userdata);
    return transpose_f32(ctx, yt);
}

}  // namespace gptj
