// Prompt-batch products on Intel AMX (bf16 tile multiply), where the CPU has it: weights and
// activations are rounded to bf16, products accumulate in f32 -- the arithmetic of
// transformers' bfloat16 on the same CPU, about 10x the AVX-512 f32 kernel's throughput.
// batch_matmul() decides when to use it.
#pragma once

#include "ggml.h"

namespace gptj {

// Whether this CPU has AMX-BF16 and AVX512-BF16 and Linux granted this process the AMX tile
// state (asked once).
bool amx_available();

// ggml custom op: dst = Yt F32 [n_pad, m] = src[0] (weights [k, m], k and m multiples of 32,
// any type row_to_f32 reads) times src[1] (pack_bf16_pairs' output, bf16_pack.h). userdata, if not null, is
// a ReleasePages (memory.h) called with each thread's rows of src[0] when it is done with them.
void amx_matmul_task(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace gptj
