#include "gptj/kv_cache.h"

#include <string>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gptj/error.h"

namespace gptj {

KvCache::KvCache(const HParams & hparams, int n_ctx) : n_ctx_(n_ctx) {
    const size_t n_tensors = 2 * static_cast<size_t>(hparams.n_layer);
    ggml_init_params params{n_tensors * ggml_tensor_overhead(), nullptr, /*no_alloc=*/true};
    ctx_.reset(ggml_init(params));
    if (!ctx_) throw Error(Error::Kind::evaluation, "ggml_init failed for the KV cache");
    for (int il = 0; il < hparams.n_layer; ++il) {
        keys_.push_back(ggml_new_tensor_2d(ctx_.get(), GGML_TYPE_F16, hparams.n_embd, n_ctx));
        values_.push_back(ggml_new_tensor_2d(ctx_.get(), GGML_TYPE_F16, n_ctx, hparams.n_embd));
        ggml_format_name(keys_.back(), "cache_k_l%d", il);
        ggml_format_name(values_.back(), "cache_v_l%d", il);
    }
    buffer_.reset(ggml_backend_alloc_ctx_tensors_from_buft(ctx_.get(), ggml_backend_cpu_buffer_type()));
    if (!buffer_) {
        throw Error(Error::Kind::evaluation, "cannot allocate the KV cache (" + std::to_string(n_ctx) + " positions)");
    }
    // Not cleared: attention only ever reads positions below n_past + n_tokens, all written
    // first, and untouched pages of a large cache then cost no memory.
}

size_t KvCache::size_bytes() const { return ggml_backend_buffer_get_size(buffer_.get()); }

}  // namespace gptj
