// GPT-J's forward pass as a ggml graph: the one place the architecture is written down.
#pragma once

#include "ggml.h"
#include "gptj/kv_cache.h"
#include "gptj/model.h"

namespace gptj {

struct ForwardGraph {
    ggml_cgraph * graph;
    ggml_tensor * tokens;     // input: I32 [n_tokens]
    ggml_tensor * positions;  // input: I32 [n_tokens], n_past .. n_past + n_tokens - 1
    ggml_tensor * logits;     // output: F32 [n_vocab, n_outputs]
};

// The most nodes build_forward_graph adds for a model of n_layer layers.
size_t forward_graph_size(int n_layer);

// Evaluates n_tokens new tokens at positions n_past.. against the cache, writing their keys
// and values into it. With all_logits the output holds every new position's logits,
// otherwise only the last one's (so lm_head runs once per batch).
ForwardGraph build_forward_graph(ggml_context * ctx, const Model & model, const KvCache & cache,
                                 int n_past, int n_tokens, bool all_logits);

}  // namespace gptj
