#include "gptj/hparams.h"

#include <limits>
#include <string>

#include "gptj/error.h"
#include "gptj/gguf_file.h"

namespace gptj {
namespace {

int32_t positive(const GgufFile & file, const std::string & key, int64_t value) {
    // 1 << 24 bounds every dimension far above any GPT-J while keeping products in range.
    if (value <= 0 || value > (int64_t{1} << 24)) {
        throw invalid_file_error(file.path(), "metadata '" + key + "' = " + std::to_string(value) + " is out of range");
    }
    return static_cast<int32_t>(value);
}

int32_t read_dim(const GgufFile & file, const std::string & key) {
    return positive(file, key, file.get_int(key));
}

}  // namespace

HParams HParams::from_gguf(const GgufFile & file, int32_t n_vocab) {
    HParams hp;
    hp.n_vocab = positive(file, "token_embd rows", n_vocab);
    hp.n_ctx_train = read_dim(file, "gptj.context_length");
    hp.n_embd = read_dim(file, "gptj.embedding_length");
    hp.n_head = read_dim(file, "gptj.attention.head_count");
    hp.n_layer = read_dim(file, "gptj.block_count");
    hp.n_ff = read_dim(file, "gptj.feed_forward_length");
    hp.rotary_dim = read_dim(file, "gptj.rope.dimension_count");
    hp.norm_eps = file.find_float("gptj.attention.layer_norm_epsilon").value_or(1e-5f);

    if (hp.n_embd % hp.n_head != 0) {
        throw invalid_file_error(file.path(), "gptj.embedding_length (" + std::to_string(hp.n_embd) +
                                                  ") is not a multiple of gptj.attention.head_count (" +
                                                  std::to_string(hp.n_head) + ")");
    }
    if (hp.rotary_dim > hp.head_dim() || hp.rotary_dim % 2 != 0) {
        throw invalid_file_error(file.path(), "gptj.rope.dimension_count (" + std::to_string(hp.rotary_dim) +
                                                  ") must be even and at most the head size (" +
                                                  std::to_string(hp.head_dim()) + ")");
    }
    if (!(hp.norm_eps > 0.0f && hp.norm_eps < 1.0f)) {
        throw invalid_file_error(file.path(), "gptj.attention.layer_norm_epsilon is out of range");
    }
    return hp;
}

}  // namespace gptj
