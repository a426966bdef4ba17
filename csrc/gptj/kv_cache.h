// The attention keys and values of every evaluated position, for every layer, in f16.
// Keys are stored one position per row ([n_embd, n_ctx]); values transposed, one channel
// per row ([n_ctx, n_embd]), so that both attention products read contiguous rows.
#pragma once

#include <string>
#include <vector>

#include "ggml-cpp.h"
#include "gptj/hparams.h"

namespace gptj {

// "12.3 GiB", for messages about memory.
std::string gib(double bytes);

class KvCache {
public:
    // Throws Error(invalid_argument) when n_ctx is not positive or the cache would not fit in
    // the machine's memory, and Error(evaluation) when the allocation fails.
    KvCache(const HParams & hparams, int n_ctx);

    static double bytes_needed(const HParams & hparams, int n_ctx);

    int n_ctx() const { return n_ctx_; }
    ggml_tensor * keys(int layer) const { return keys_[static_cast<size_t>(layer)]; }
    ggml_tensor * values(int layer) const { return values_[static_cast<size_t>(layer)]; }
    size_t size_bytes() const;

    // Copies source's keys and values of positions [0, n_positions) into this cache, which must
    // be of the same model and hold at least n_positions.
    void copy_from(const KvCache & source, int n_positions);

private:
    int n_ctx_;
    ggml_context_ptr ctx_;
    ggml_backend_buffer_ptr buffer_;
    std::vector<ggml_tensor *> keys_;
    std::vector<ggml_tensor *> values_;
};

}  // namespace gptj
