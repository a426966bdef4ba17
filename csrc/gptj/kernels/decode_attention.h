// One new token's attention over its sequence's cache (keys and values one position per row, in
// f16, q8_0 or q4_0): what every layer of a generation step runs, on CPUs with AVX2.
//
// Why: ggml_flash_attn_ext walks the cache one position at a time per head (a dot product, an
// exponential, a value row converted and added: online softmax), so at 1900 positions a q8_0
// cache cost more time than reading half the bytes saved (README, "Long contexts"). Here a thread
// takes whole heads and reads the cache in order, four positions' rows at a time for all its
// heads: every score first (integer dot products for quantized keys; the queries rounded as
// ggml's kernel rounds them for the same keys, to 8 bits per block or to f16, so that prompt
// batches and single tokens agree), the exponentials in one vectorized pass, then the value rows
// times their weights added into each head's sums (in L1).
#pragma once

#include <cstdint>

#include "ggml.h"

namespace gptj {

// Whether the kernel evaluates a single token's attention over a cache of this type (F16, Q8_0,
// Q4_0) and head size (a multiple of 8 for F16, of 32 for the quantized types) on this CPU: AVX2
// present (no GPTJ_GGML_ISA cap turns it off: it is the AVX2 kernel), the kernel switched on.
bool decode_attention_applies(ggml_type cache_type, int64_t head_dim);
bool decode_attention_available();

// On by default; off, single tokens take ggml_flash_attn_ext like prompt batches (for
// side-by-side measurements and tests). Applies to graphs built afterwards.
void set_decode_attention_enabled(bool enabled);

// ggml custom op: dst F32 [head_dim, n_head] = softmax(K^T q / sqrt(head_dim)) V for each head,
// with src[0] the token's rotated queries F32 [head_dim, n_head] (rows contiguous) and src[1] and
// src[2] the keys and values: views [n_embd, n_kv] of a cache, one position per row with the
// heads side by side. Thread ith of nth takes a contiguous range of heads.
void decode_attention_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
