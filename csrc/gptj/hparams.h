// GPT-J's hyper-parameters, read from the GGUF keys llama.cpp uses for the `gptj`
// architecture and checked once, so nothing downstream has to re-check them.
#pragma once

#include <cstdint>

namespace gptj {

class GgufFile;

struct HParams {
    int32_t n_vocab = 0;       // rows of token_embd (50400 for GPT-J-6B)
    int32_t n_ctx_train = 0;   // gptj.context_length (n_positions, 2048)
    int32_t n_embd = 0;        // gptj.embedding_length (4096)
    int32_t n_head = 0;        // gptj.attention.head_count (16)
    int32_t n_layer = 0;       // gptj.block_count (28)
    int32_t n_ff = 0;          // gptj.feed_forward_length (n_inner, 16384)
    int32_t rotary_dim = 0;    // gptj.rope.dimension_count (64 of each head's 256 dims)
    float norm_eps = 1e-5f;    // gptj.attention.layer_norm_epsilon

    int32_t head_dim() const { return n_embd / n_head; }

    // Throws Error(invalid_file) naming the key that is missing or out of range.
    // n_vocab comes from the caller (the embedding's row count).
    static HParams from_gguf(const GgufFile & file, int32_t n_vocab);
};

}  // namespace gptj
