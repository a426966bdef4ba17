// The immutable half of GPT-J: hyper-parameters, weights (memory-mapped from the GGUF file)
// and vocabulary. Sessions share one Model through std::shared_ptr<const Model>; nothing
// in it changes after load, so any number of sessions may read it at once.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ggml-cpp.h"
#include "gptj/gguf_file.h"
#include "gptj/hparams.h"
#include "gptj/tokenizer/vocab.h"

namespace gptj {

struct LayerWeights {
    ggml_tensor * attn_norm_w;   // ln_1, read by both the attention and the MLP branch
    ggml_tensor * attn_norm_b;
    ggml_tensor * attn_q;        // [n_embd, n_embd], no bias
    ggml_tensor * attn_k;
    ggml_tensor * attn_v;
    ggml_tensor * attn_output;
    ggml_tensor * ffn_up_w;      // fc_in  [n_embd, n_ff]
    ggml_tensor * ffn_up_b;
    ggml_tensor * ffn_down_w;    // fc_out [n_ff, n_embd]
    ggml_tensor * ffn_down_b;
};

struct Weights {
    ggml_tensor * token_embd;    // wte [n_embd, n_vocab]
    std::vector<LayerWeights> layers;
    ggml_tensor * output_norm_w; // ln_f
    ggml_tensor * output_norm_b;
    ggml_tensor * output_w;      // lm_head [n_embd, n_vocab], with a bias
    ggml_tensor * output_b;
};

struct ModelParams {
    // Copy the matrices ggml's CPU backend can interleave for faster kernels (quantized
    // types) into that layout; the others stay memory-mapped. Costs load time and memory.
    bool repack = true;
    // Keep the other weights memory-mapped (zero copy, instant load, shared page cache);
    // false copies them into anonymous memory the process owns.
    bool mmap = true;
    int n_threads = 0;  // threads for repacking; 0: physical cores
};

class Model {
public:
    // Opens, validates and maps a GPT-J GGUF file. Throws gptj::Error naming the file and
    // the key or tensor at fault.
    static std::shared_ptr<const Model> load(const std::string & path, const ModelParams & params = {});

    const std::string & path() const { return file_.path(); }
    const HParams & hparams() const { return hparams_; }
    const Weights & weights() const { return weights_; }
    const Vocab & vocab() const { return *vocab_; }
    std::shared_ptr<const Vocab> shared_vocab() const { return vocab_; }
    const GgufFile & file() const { return file_; }

    int64_t n_params() const { return n_params_; }
    size_t weight_bytes() const { return weight_bytes_; }
    // The type of the large matrices ("f16", "q4_0", or "mixed" if they differ).
    std::string weight_type() const;
    // Bytes of weights copied into ggml's repacked layout (0: all memory-mapped).
    size_t repacked_bytes() const { return repacked_bytes_; }
    // For a repacked matrix: the same matrix in the file's layout, over the mapped file (our
    // prompt-batch kernel reads it; ggml's repacked kernels serve single tokens). nullptr
    // for every other tensor, or where our kernel cannot run.
    ggml_tensor * file_layout(const ggml_tensor * matrix) const;

private:
    Model(const std::string & path, const ModelParams & params);
    void place_weights(const ModelParams & params);
    void add_file_layouts(const std::vector<ggml_tensor *> & matrices);
    ggml_tensor * add_tensor(const std::string & name, std::vector<int64_t> shape, bool is_matrix);
    void load_vocab();

    GgufFile file_;
    HParams hparams_;
    ggml_context_ptr ctx_;              // tensor headers only; the data is the mapping
    ggml_backend_buffer_ptr buffer_;    // a CPU buffer wrapping the mapped file
    ggml_backend_buffer_ptr repacked_;  // matrices in ggml's CPU_REPACK layout, if any
    ggml_context_ptr file_layout_ctx_;  // headers of the repacked matrices' file-layout twins
    ggml_backend_buffer_ptr file_layout_buffer_;  // a CPU buffer over the mapped file, for them
    std::unordered_map<const ggml_tensor *, ggml_tensor *> file_layout_;
    Weights weights_{};
    std::shared_ptr<const Vocab> vocab_;
    int64_t n_params_ = 0;
    size_t weight_bytes_ = 0;
    size_t repacked_bytes_ = 0;
};

}  // namespace gptj
