// GPT-J's forward pass as a ggml graph: the one place the architecture is written down.
#pragma once

#include <vector>

#include "ggml.h"
#include "gptj/kv_cache.h"
#include "gptj/model.h"

namespace gptj {

// Which of a sequence's new positions get logits.
enum class Outputs { none, last, all };

// One sequence's part of a batch: n_tokens new tokens at positions n_past.. of its own cache.
struct GraphSequence {
    const KvCache * cache;
    int n_past;
    int n_tokens;
    Outputs outputs;
};

struct ForwardGraph {
    ggml_cgraph * graph;
    ggml_tensor * tokens;       // input: I32 [n_tokens], the sequences' tokens one after another
    ggml_tensor * positions;    // input: I32 [n_tokens], each token's position in its sequence
    ggml_tensor * output_rows;  // input: I32 [n_outputs], which tokens get logits; nullptr when implied
    ggml_tensor * logits;       // output: F32 [n_vocab, n_outputs], nullptr when no sequence wants any
};

// The most nodes build_forward_graph adds for a model of n_layer layers and n_sequences sequences.
size_t forward_graph_size(int n_layer, size_t n_sequences = 1);

// Evaluates each sequence's new tokens against its cache, writing their keys and values into
// it. The weight products run once over every sequence's tokens together (each weight is read
// once per graph); attention runs per sequence, over that sequence's own cache. The logits
// come in sequence order: all of a sequence's positions (Outputs::all), its last (last), or
// none (a prompt chunk that is not the prompt's end: lm_head, the last layer's feed-forward
// and its attention output are then left out of the graph).
ForwardGraph build_forward_graph(ggml_context * ctx, const Model & model, const std::vector<GraphSequence> & sequences);

// The rows output_rows must hold (when the graph has it): for each sequence in order, the
// batch indices of the tokens whose logits it wants.
std::vector<int32_t> output_rows(const std::vector<GraphSequence> & sequences);

}  // namespace gptj
