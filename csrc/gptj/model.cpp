#include "gptj/model.h"

#include <algorithm>
#include <climits>
#include <set>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "gptj/error.h"
#include "gptj/kernels/matmul.h"
#include "gptj/memory.h"
#include "gptj/repack.h"
#include "gptj/threads.h"

namespace gptj {
namespace {

constexpr const char * kArchitecture = "gptj";
// The tensors of a GPT-J file: token_embd, output_norm (weight, bias), output (weight, bias),
// and ten per layer (see the constructor).
constexpr int64_t kTensorsOutsideLayers = 5;
constexpr int64_t kTensorsPerLayer = 10;

std::string shape_string(const int64_t * ne, int n_dims) {
    std::string s = "[";
    for (int d = 0; d < n_dims; ++d) {
        s += (d ? ", " : "") + std::to_string(ne[d]);
    }
    return s + "]";
}

// Types the CPU backend can multiply by (and take rows of, for token_embd).
bool is_supported_matrix_type(ggml_type type) {
    switch (type) {
        case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1:
        case GGML_TYPE_Q8_0: case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K: case GGML_TYPE_IQ4_NL:
            return true;
        default:
            return false;
    }
}

}  // namespace

std::shared_ptr<const Model> Model::load(const std::string & path, const ModelParams & params) {
    checked_thread_count(params.n_threads);  // before the file is read: a bad argument costs no load
    return std::shared_ptr<const Model>(new Model(path, params));
}

Model::Model(const std::string & path, const ModelParams & params) : file_(path) {
    const auto architecture = file_.find_string("general.architecture");
    if (!architecture) {
        throw invalid_file_error(path, "missing metadata 'general.architecture': not a model file written for gptj_ggml");
    }
    if (*architecture != kArchitecture) {
        throw invalid_file_error(path, "the model's architecture is '" + *architecture +
                                           "'; gptj_ggml runs only 'gptj' (GPT-J)");
    }

    const GgufTensorInfo * embd = file_.find_tensor("token_embd.weight");
    if (embd == nullptr) throw invalid_file_error(path, "missing tensor 'token_embd.weight'");
    hparams_ = HParams::from_gguf(file_, static_cast<int32_t>(std::min<int64_t>(embd->ne[1], INT32_MAX)));
    const int64_t n_embd = hparams_.n_embd, n_vocab = hparams_.n_vocab, n_ff = hparams_.n_ff;

    // Everything below is sized from n_layer: first it must fit the tensors the file holds (a
    // 4-byte edit to 8,000,000 layers made ggml_init abort on a 1 GB context). Rounded up, so
    // that a file one layer short reports the first tensor it lacks.
    const int64_t n_file_tensors = static_cast<int64_t>(file_.tensors().size());
    if (hparams_.n_layer > (n_file_tensors + kTensorsPerLayer - 1) / kTensorsPerLayer) {
        throw invalid_file_error(path, "metadata 'gptj.block_count' = " + std::to_string(hparams_.n_layer) +
                                           " does not fit the file: it holds " + std::to_string(n_file_tensors) +
                                           " tensors, and each layer has " + std::to_string(kTensorsPerLayer));
    }
    // The vocabulary is checked before the weights are placed: repacking a large model takes
    // seconds, a token count that disagrees with token_embd is known at once.
    load_vocab();

    const size_t n_tensors = static_cast<size_t>(kTensorsOutsideLayers + kTensorsPerLayer * hparams_.n_layer);
    ggml_init_params init{n_tensors * ggml_tensor_overhead(), nullptr, /*no_alloc=*/true};
    ctx_.reset(ggml_init(init));
    if (!ctx_) throw Error(Error::Kind::evaluation, "ggml_init failed for the weight context");

    // Shapes in ggml order: ne[0] is the row (input) length.
    weights_.token_embd = add_tensor("token_embd.weight", {n_embd, n_vocab}, true);
    weights_.layers.resize(static_cast<size_t>(hparams_.n_layer));
    for (int il = 0; il < hparams_.n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        LayerWeights & l = weights_.layers[static_cast<size_t>(il)];
        l.attn_norm_w = add_tensor(p + "attn_norm.weight", {n_embd}, false);
        l.attn_norm_b = add_tensor(p + "attn_norm.bias", {n_embd}, false);
        l.attn_q = add_tensor(p + "attn_q.weight", {n_embd, n_embd}, true);
        l.attn_k = add_tensor(p + "attn_k.weight", {n_embd, n_embd}, true);
        l.attn_v = add_tensor(p + "attn_v.weight", {n_embd, n_embd}, true);
        l.attn_output = add_tensor(p + "attn_output.weight", {n_embd, n_embd}, true);
        l.ffn_up_w = add_tensor(p + "ffn_up.weight", {n_embd, n_ff}, true);
        l.ffn_up_b = add_tensor(p + "ffn_up.bias", {n_ff}, false);
        l.ffn_down_w = add_tensor(p + "ffn_down.weight", {n_ff, n_embd}, true);
        l.ffn_down_b = add_tensor(p + "ffn_down.bias", {n_embd}, false);
    }
    weights_.output_norm_w = add_tensor("output_norm.weight", {n_embd}, false);
    weights_.output_norm_b = add_tensor("output_norm.bias", {n_embd}, false);
    weights_.output_w = add_tensor("output.weight", {n_embd, n_vocab}, true);
    weights_.output_b = add_tensor("output.bias", {n_vocab}, false);

    std::set<std::string> expected;
    for (ggml_tensor * t = ggml_get_first_tensor(ctx_.get()); t != nullptr; t = ggml_get_next_tensor(ctx_.get(), t)) {
        expected.insert(ggml_get_name(t));
    }
    for (const auto & info : file_.tensors()) {
        if (expected.count(info.name) == 0) {
            throw invalid_file_error(path, "unexpected tensor '" + info.name + "' for a GPT-J model");
        }
    }

    place_weights(params);
    for (ggml_tensor * t = ggml_get_first_tensor(ctx_.get()); t != nullptr; t = ggml_get_next_tensor(ctx_.get(), t)) {
        n_params_ += ggml_nelements(t);
        weight_bytes_ += ggml_nbytes(t);
    }
}

void Model::place_weights(const ModelParams & params) {
    auto mapped = [&](const ggml_tensor * t) { return file_.mapping() + file_.find_tensor(ggml_get_name(t))->file_offset; };

    if (params.repack) {
        // token_embd is read by get_rows, which the repacked layout does not serve.
        std::vector<ggml_tensor *> matrices{weights_.output_w};
        for (const LayerWeights & l : weights_.layers) {
            matrices.insert(matrices.end(), {l.attn_q, l.attn_k, l.attn_v, l.attn_output, l.ffn_up_w, l.ffn_down_w});
        }
        // Types our kernels multiply faster in the file's layout than ggml's do repacked stay
        // mapped: no copy, no repacking time.
        matrices.erase(std::remove_if(matrices.begin(), matrices.end(),
                                      [](const ggml_tensor * t) { return keeps_file_layout(t->type); }),
                       matrices.end());
        const int n_threads = params.n_threads > 0 ? params.n_threads : physical_core_count();
        auto release = [&](const ggml_tensor * t) {  // the repacked copy replaces these pages
            const GgufTensorInfo * info = file_.find_tensor(ggml_get_name(t));
            file_.release_pages(info->file_offset, info->n_bytes);
        };
        repacked_ = repack_matrices(matrices, mapped, release, n_threads);
        for (ggml_tensor * t : matrices) {
            if (t->buffer != nullptr) repacked_bytes_ += ggml_nbytes(t);
        }
        add_file_layouts(matrices);
    }

    if (!params.mmap) {
        // Tensors already placed (repacked) are skipped by the allocator.
        buffer_.reset(ggml_backend_alloc_ctx_tensors_from_buft(ctx_.get(), ggml_backend_cpu_buffer_type()));
        if (!buffer_) throw Error(Error::Kind::evaluation, file_.path() + ": cannot allocate memory for the weights");
        advise_huge_pages(buffer_.get());
        for (ggml_tensor * t = ggml_get_first_tensor(ctx_.get()); t != nullptr; t = ggml_get_next_tensor(ctx_.get(), t)) {
            if (t->buffer != buffer_.get()) continue;
            ggml_backend_tensor_set(t, mapped(t), 0, ggml_nbytes(t));
            const GgufTensorInfo * info = file_.find_tensor(ggml_get_name(t));
            file_.release_pages(info->file_offset, info->n_bytes);
        }
        return;
    }

    // Everything else points into the mapped file: no copy, the page cache holds the weights.
    buffer_.reset(ggml_backend_cpu_buffer_from_ptr(file_.mapping(), file_.file_size()));
    if (!buffer_) throw Error(Error::Kind::evaluation, file_.path() + ": cannot create a CPU buffer over the mapped file");
    for (ggml_tensor * t = ggml_get_first_tensor(ctx_.get()); t != nullptr; t = ggml_get_next_tensor(ctx_.get(), t)) {
        if (t->buffer != nullptr) continue;
        if (ggml_backend_tensor_alloc(buffer_.get(), t, const_cast<uint8_t *>(mapped(t))) != GGML_STATUS_SUCCESS) {
            throw invalid_file_error(file_.path(), std::string("cannot place tensor '") + ggml_get_name(t) + "' in memory");
        }
    }
}

void Model::add_file_layouts(const std::vector<ggml_tensor *> & matrices) {
    std::vector<ggml_tensor *> repacked;
    for (ggml_tensor * t : matrices) {
        if (t->buffer != nullptr) repacked.push_back(t);
    }
    if (repacked.empty()) return;
    ggml_init_params init{repacked.size() * ggml_tensor_overhead(), nullptr, /*no_alloc=*/true};
    file_layout_ctx_.reset(ggml_init(init));
    file_layout_buffer_.reset(ggml_backend_cpu_buffer_from_ptr(file_.mapping(), file_.file_size()));
    if (!file_layout_ctx_ || !file_layout_buffer_) return;  // an optimisation only
    for (ggml_tensor * t : repacked) {
        ggml_tensor * twin = ggml_dup_tensor(file_layout_ctx_.get(), t);
        ggml_format_name(twin, "%s (file layout)", ggml_get_name(t));
        auto * data = const_cast<uint8_t *>(file_.mapping() + file_.find_tensor(ggml_get_name(t))->file_offset);
        if (ggml_backend_tensor_alloc(file_layout_buffer_.get(), twin, data) != GGML_STATUS_SUCCESS) continue;
        if (batch_matmul_supported(twin)) file_layout_[t] = twin;
    }
}

ggml_tensor * Model::file_layout(const ggml_tensor * matrix) const {
    const auto it = file_layout_.find(matrix);
    return it == file_layout_.end() ? nullptr : it->second;
}

ggml_tensor * Model::add_tensor(const std::string & name, std::vector<int64_t> shape, bool is_matrix) {
    auto invalid = [&](const std::string & what) {
        return invalid_file_error(file_.path(), "tensor '" + name + "' " + what);
    };
    const GgufTensorInfo * info = file_.find_tensor(name);
    if (info == nullptr) throw invalid_file_error(file_.path(), "missing tensor '" + name + "'");
    const int n_dims = static_cast<int>(shape.size());
    bool same_shape = info->n_dims <= n_dims;
    for (int d = 0; d < GGML_MAX_DIMS; ++d) {
        same_shape = same_shape && info->ne[d] == (d < n_dims ? shape[static_cast<size_t>(d)] : 1);
    }
    if (!same_shape) {
        throw invalid("has shape " + shape_string(info->ne, info->n_dims) + ", expected " +
                      shape_string(shape.data(), n_dims) + " from the hyper-parameters");
    }
    if (is_matrix ? !is_supported_matrix_type(info->type) : info->type != GGML_TYPE_F32) {
        throw invalid(std::string("has type ") + ggml_type_name(info->type) + ", expected " +
                      (is_matrix ? "f32, f16, bf16 or a ggml quantized type" : "f32"));
    }
    const int64_t n_rows = n_dims == 1 ? 1 : shape[1];
    if (info->n_bytes != ggml_row_size(info->type, shape[0]) * static_cast<size_t>(n_rows)) {
        throw invalid("has an inconsistent size");
    }
    ggml_tensor * t = n_dims == 1 ? ggml_new_tensor_1d(ctx_.get(), info->type, shape[0])
                                  : ggml_new_tensor_2d(ctx_.get(), info->type, shape[0], shape[1]);
    ggml_set_name(t, name.c_str());
    return t;
}

void Model::load_vocab() {
    const std::string model = file_.find_string("tokenizer.ggml.model").value_or("");
    if (model != "gpt2") {
        throw invalid_file_error(file_.path(), "metadata 'tokenizer.ggml.model' is '" + model + "', expected 'gpt2'");
    }
    VocabData data;
    data.tokens = file_.get_string_array("tokenizer.ggml.tokens");
    if (data.tokens.size() != static_cast<size_t>(hparams_.n_vocab)) {
        throw invalid_file_error(file_.path(), "'tokenizer.ggml.tokens' has " + std::to_string(data.tokens.size()) +
                                                   " tokens but token_embd has " + std::to_string(hparams_.n_vocab) +
                                                   " rows");
    }
    if (file_.has_key("tokenizer.ggml.token_type")) {
        data.token_types = file_.get_int_array("tokenizer.ggml.token_type");
    }
    if (file_.has_key("tokenizer.ggml.merges")) {
        data.merges = file_.get_string_array("tokenizer.ggml.merges");
    }
    // Checked in 64 bits: a cast first would make 4294967295 read as -1 ("no such token").
    auto special_id = [&](const std::string & key) {
        const int64_t id = file_.find_int(key).value_or(-1);
        if (id < -1 || id >= static_cast<int64_t>(data.tokens.size())) {
            throw invalid_file_error(file_.path(), "metadata '" + key + "' = " + std::to_string(id) +
                                                       " is not a token id (the vocabulary has " +
                                                       std::to_string(data.tokens.size()) + " tokens)");
        }
        return static_cast<int32_t>(id);
    };
    data.bos_id = special_id("tokenizer.ggml.bos_token_id");
    data.eos_id = special_id("tokenizer.ggml.eos_token_id");
    vocab_ = std::make_shared<const Vocab>(std::move(data));
}

std::string Model::weight_type() const {
    std::set<ggml_type> types;
    for (const auto & l : weights_.layers) {
        for (const ggml_tensor * t : {l.attn_q, l.attn_k, l.attn_v, l.attn_output, l.ffn_up_w, l.ffn_down_w}) {
            types.insert(t->type);
        }
    }
    return types.size() == 1 ? ggml_type_name(*types.begin()) : "mixed";
}

}  // namespace gptj
