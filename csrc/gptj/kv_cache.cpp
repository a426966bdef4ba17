#include "gptj/kv_cache.h"

#include <cstdio>
#include <cstring>
#include <string>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gptj/error.h"
#include "gptj/memory.h"

namespace gptj {

std::string gib(double bytes) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
    return text;
}

ggml_type parse_cache_type(const std::string & name) {
    for (ggml_type type : {GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0}) {
        if (name == ggml_type_name(type)) return type;
    }
    throw Error(Error::Kind::invalid_argument, "cache_type must be one of f16, q8_0, q4_0, got '" + name + "'");
}

namespace {

void check_layout(const HParams & hparams, const CacheLayout & layout) {
    if (layout.type == GGML_TYPE_F16) return;
    const std::string name = ggml_type_name(layout.type);
    if (layout.type != GGML_TYPE_Q8_0 && layout.type != GGML_TYPE_Q4_0) {
        throw Error(Error::Kind::invalid_argument, "cache_type " + name + " is not a KV cache type (f16, q8_0, q4_0)");
    }
    if (!layout.flash_attention) {
        throw Error(Error::Kind::invalid_argument,
                    "cache_type " + name + " needs flash attention (plain attention stores the values transposed)");
    }
    // Each head's slice of a row is quantized and read on its own.
    const int64_t block = ggml_blck_size(layout.type);
    if (hparams.head_dim() % block != 0) {
        throw Error(Error::Kind::invalid_argument, "cache_type " + name + " needs a head size that is a multiple of " +
                                                       std::to_string(block) + ", this model's is " +
                                                       std::to_string(hparams.head_dim()));
    }
}

}  // namespace

double KvCache::bytes_needed(const HParams & hparams, int n_ctx, CacheLayout layout) {
    // In double: n_layer * n_embd * n_ctx can pass 2^64 for a crafted request.
    return 2.0 * hparams.n_layer * static_cast<double>(ggml_row_size(layout.type, hparams.n_embd)) * n_ctx;
}

KvCache::KvCache(const HParams & hparams, int n_ctx, CacheLayout layout) : n_ctx_(n_ctx), layout_(layout) {
    if (n_ctx <= 0) throw Error(Error::Kind::invalid_argument, "n_ctx must be positive, got " + std::to_string(n_ctx));
    check_layout(hparams, layout);
    const double needed = bytes_needed(hparams, n_ctx, layout);
    const size_t memory = physical_memory_bytes();
    if (memory > 0 && needed > static_cast<double>(memory)) {
        throw Error(Error::Kind::invalid_argument, "n_ctx = " + std::to_string(n_ctx) + " needs a KV cache of " +
                                                       gib(needed) + ", more than this machine's " +
                                                       gib(static_cast<double>(memory)) + " of memory");
    }
    const size_t n_tensors = 2 * static_cast<size_t>(hparams.n_layer);
    ggml_init_params params{n_tensors * ggml_tensor_overhead(), nullptr, /*no_alloc=*/true};
    ctx_.reset(ggml_init(params));
    if (!ctx_) throw Error(Error::Kind::evaluation, "ggml_init failed for the KV cache");
    for (int il = 0; il < hparams.n_layer; ++il) {
        keys_.push_back(ggml_new_tensor_2d(ctx_.get(), layout.type, hparams.n_embd, n_ctx));
        values_.push_back(layout.flash_attention ? ggml_new_tensor_2d(ctx_.get(), layout.type, hparams.n_embd, n_ctx)
                                                 : ggml_new_tensor_2d(ctx_.get(), layout.type, n_ctx, hparams.n_embd));
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

void KvCache::copy_from(const KvCache & source, int n_positions) {
    if (source.layout_.type != layout_.type || source.layout_.flash_attention != layout_.flash_attention) {
        throw Error(Error::Kind::invalid_argument, "cannot copy a KV cache of another cache_type or attention");
    }
    const size_t n = static_cast<size_t>(n_positions);
    for (size_t il = 0; il < keys_.size(); ++il) {
        // Keys: one position per row, the first n rows at once.
        const ggml_tensor * src_k = source.keys_[il];
        std::memcpy(keys_[il]->data, src_k->data, n * src_k->nb[1]);
        if (layout_.flash_attention) {  // values stored like the keys
            std::memcpy(values_[il]->data, source.values_[il]->data, n * source.values_[il]->nb[1]);
            continue;
        }
        // Values: one channel per row, the first n positions of each.
        const ggml_tensor * src_v = source.values_[il];
        ggml_tensor * dst_v = values_[il];
        for (int64_t channel = 0; channel < dst_v->ne[1]; ++channel) {
            std::memcpy(static_cast<char *>(dst_v->data) + channel * dst_v->nb[1],
                        static_cast<const char *>(src_v->data) + channel * src_v->nb[1], n * ggml_element_size(dst_v));
        }
    }
}

size_t KvCache::size_bytes() const { return ggml_backend_buffer_get_size(buffer_.get()); }

}  // namespace gptj
