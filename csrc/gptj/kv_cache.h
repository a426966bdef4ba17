// The attention keys and values of every evaluated position, for every layer.
//
// Keys are stored one position per row ([n_embd, n_ctx]). Values are stored either transposed,
// one channel per row ([n_ctx, n_embd], for the two ggml_mul_mat products of plain attention),
// or like the keys (for ggml_flash_attn_ext). Only the second can be quantized: a transposed row
// gains one element per token, and a quantized block of 32 cannot be written one element at a time.
#pragma once

#include <string>
#include <vector>

#include "ggml-cpp.h"
#include "gptj/hparams.h"

namespace gptj {

// "12.3 GiB", for messages about memory.
std::string gib(double bytes);

// How a cache stores keys and values.
struct CacheLayout {
    // F16, or Q8_0 / Q4_0 (about half / a quarter of the bytes, read per token generated).
    ggml_type type = GGML_TYPE_F16;
    // Values untransposed, attention by ggml_flash_attn_ext; required by a quantized type.
    bool flash_attention = false;
};

// "f16", "q8_0" or "q4_0" as a ggml type; Error(invalid_argument) naming the choices otherwise.
ggml_type parse_cache_type(const std::string & name);

class KvCache {
public:
    // Throws Error(invalid_argument) when n_ctx is not positive or the cache would not fit in
    // the machine's memory, and Error(evaluation) when the allocation fails.
    // Also Error(invalid_argument) for a layout this model cannot use (see check_layout).
    KvCache(const HParams & hparams, int n_ctx, CacheLayout layout = {});

    static double bytes_needed(const HParams & hparams, int n_ctx, CacheLayout layout = {});

    int n_ctx() const { return n_ctx_; }
    const CacheLayout & layout() const { return layout_; }
    ggml_tensor * keys(int layer) const { return keys_[static_cast<size_t>(layer)]; }
    ggml_tensor * values(int layer) const { return values_[static_cast<size_t>(layer)]; }
    size_t size_bytes() const;

    // Copies source's keys and values of positions [0, n_positions) into this cache, which must
    // be of the same model and layout and hold at least n_positions.
    void copy_from(const KvCache & source, int n_positions);

private:
    int n_ctx_;
    CacheLayout layout_;
    ggml_context_ptr ctx_;
    ggml_backend_buffer_ptr buffer_;
    std::vector<ggml_tensor *> keys_;
    std::vector<ggml_tensor *> values_;
};

}  // namespace gptj
