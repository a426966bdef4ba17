#include "gptj/graph.h"

#include <cmath>

#include "gptj/kernels/decode_attention.h"
#include "gptj/kernels/matmul.h"

namespace gptj {
namespace {

// GPT-J's rotary embedding: base 10000 over the first rotary_dim dimensions of each head,
// rotating interleaved pairs (x0, x1), (x2, x3), ... -- ggml's "normal" rope mode.
constexpr float kRopeFreqBase = 10000.0f;

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * weight, ggml_tensor * bias, float eps) {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, eps), weight), bias);
}

// w times x, reading the file's copy of w for prompt batches when ggml repacked w.
ggml_tensor * product(ggml_context * ctx, const Model & model, ggml_tensor * w, MatmulInput & x) {
    return batch_matmul(ctx, w, x, model.file_layout(w));
}

ggml_tensor * rotary(ggml_context * ctx, ggml_tensor * x, ggml_tensor * positions, const HParams & hp) {
    return ggml_rope_ext(ctx, x, positions, /*freq_factors=*/nullptr, hp.rotary_dim, GGML_ROPE_TYPE_NORMAL,
                         /*n_ctx_orig=*/0, kRopeFreqBase, /*freq_scale=*/1.0f, /*ext_factor=*/0.0f,
                         /*attn_factor=*/1.0f, /*beta_fast=*/0.0f, /*beta_slow=*/0.0f);
}

// Tokens [first, first + n) of a batch tensor whose dimension token_dim (1 or 2) counts tokens
// (the tensor itself when that is all of it: a single sequence's graph has no view nodes).
ggml_tensor * token_columns(ggml_context * ctx, ggml_tensor * t, int token_dim, int64_t first, int64_t n) {
    if (first == 0 && n == t->ne[token_dim]) return t;
    if (token_dim == 1) return ggml_view_2d(ctx, t, t->ne[0], n, t->nb[1], static_cast<size_t>(first) * t->nb[1]);
    return ggml_view_3d(ctx, t, t->ne[0], t->ne[1], n, t->nb[1], t->nb[2], static_cast<size_t>(first) * t->nb[2]);
}

// ggml custom op filling a causal mask F16 [n_kv, n] for n new tokens after n_kv - n cached
// ones: 0 where token i may see position j (j <= n_kv - n + i), -inf elsewhere. Computed inside
// the graph from its own shape, so a batch of sequences needs no mask inputs to fill.
void fill_causal_mask(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const int64_t n_kv = dst->ne[0], n = dst->ne[1], n_past = n_kv - n;
    const ggml_fp16_t zero = ggml_fp32_to_fp16(0.0f), minus_infinity = ggml_fp32_to_fp16(-INFINITY);
    for (int64_t i = ith; i < n; i += nth) {
        auto * row = reinterpret_cast<ggml_fp16_t *>(static_cast<char *>(dst->data) + i * dst->nb[1]);
        for (int64_t j = 0; j < n_kv; ++j) row[j] = j <= n_past + i ? zero : minus_infinity;
    }
}

// Heads of a cache tensor stored one position per row: [head_dim, n_kv, n_head].
ggml_tensor * cached_heads(ggml_context * ctx, ggml_tensor * cache, int64_t head_dim, int64_t n_head, int64_t n_kv) {
    return ggml_view_3d(ctx, cache, head_dim, n_kv, n_head, cache->nb[1], ggml_row_size(cache->type, head_dim), 0);
}

// A single new token's attention by our kernel (decode_attention.h): q [head_dim, n_head, 1].
ggml_tensor * decode_attention(ggml_context * ctx, ggml_tensor * cache_k, ggml_tensor * cache_v, ggml_tensor * q,
                               int64_t head_dim, int64_t n_head, int64_t n_kv) {
    ggml_tensor * args[] = {q, ggml_view_2d(ctx, cache_k, cache_k->ne[0], n_kv, cache_k->nb[1], 0),
                            ggml_view_2d(ctx, cache_v, cache_v->ne[0], n_kv, cache_v->nb[1], 0)};
    ggml_tensor * heads = ggml_custom_4d(ctx, GGML_TYPE_F32, head_dim, n_head, 1, 1, args, 3, decode_attention_task,
                                         GGML_N_TASKS_MAX, /*userdata=*/nullptr);
    return ggml_reshape_2d(ctx, heads, head_dim * n_head, 1);
}

// Flash attention (ggml_flash_attn_ext: online softmax, no [n_kv, n, n_head] score matrix) over
// a cache whose keys and values are both one position per row, in f16 or quantized; a single
// token by our kernel where it applies.
ggml_tensor * flash_attention(ggml_context * ctx, ggml_tensor * cache_k, ggml_tensor * cache_v, ggml_tensor * q,
                              int64_t head_dim, int64_t n_head, int64_t n_kv, int n) {
    if (n == 1 && decode_attention_applies(cache_k->type, head_dim)) {
        return decode_attention(ctx, cache_k, cache_v, q, head_dim, n_head, n_kv);
    }
    ggml_tensor * keys = cached_heads(ctx, cache_k, head_dim, n_head, n_kv);
    ggml_tensor * values = cached_heads(ctx, cache_v, head_dim, n_head, n_kv);
    ggml_tensor * queries = ggml_permute(ctx, q, 0, 2, 1, 3);  // [head_dim, n, n_head]
    // A single new token sees every cached position: no mask to read.
    ggml_tensor * mask = n == 1 ? nullptr
                                : ggml_custom_4d(ctx, GGML_TYPE_F16, n_kv, n, 1, 1, /*args=*/nullptr, 0, fill_causal_mask,
                                                 GGML_N_TASKS_MAX, /*userdata=*/nullptr);
    ggml_tensor * heads = ggml_flash_attn_ext(ctx, queries, keys, values, mask,
                                              1.0f / std::sqrt(static_cast<float>(head_dim)), /*max_bias=*/0.0f,
                                              /*logit_softcap=*/0.0f);
    ggml_flash_attn_ext_set_prec(heads, GGML_PREC_F32);
    return ggml_reshape_2d(ctx, heads, head_dim * n_head, n);  // [head_dim, n_head, n] is already merged
}

// One sequence's causal self-attention over its cache: q and k [head_dim, n_head, n] (rotated),
// v [n_embd, n]. Writes k and v into the cache first (the copies are expanded into the graph
// before the reads), returns the heads merged, [n_embd, n].
ggml_tensor * sequence_attention(ggml_context * ctx, ggml_cgraph * graph, const HParams & hp, const KvCache & cache,
                                 int il, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int n_past, int n) {
    const int64_t head_dim = hp.head_dim(), n_head = hp.n_head, n_embd = hp.n_embd;
    const int64_t n_kv = n_past + n;

    ggml_tensor * cache_k = cache.keys(il);
    ggml_tensor * cache_v = cache.values(il);
    // Whole rows from n_past on; ggml_cpy quantizes them when the cache is quantized.
    ggml_tensor * k_slot = ggml_view_1d(ctx, cache_k, n * n_embd, static_cast<size_t>(n_past) * cache_k->nb[1]);
    ggml_build_forward_expand(graph, ggml_cpy(ctx, k, k_slot));
    if (cache.layout().flash_attention) {
        ggml_tensor * v_slot = ggml_view_1d(ctx, cache_v, n * n_embd, static_cast<size_t>(n_past) * cache_v->nb[1]);
        ggml_build_forward_expand(graph, ggml_cpy(ctx, v, v_slot));
        return flash_attention(ctx, cache_k, cache_v, q, head_dim, n_head, n_kv, n);
    }
    ggml_tensor * v_slot = ggml_view_2d(ctx, cache_v, n, n_embd, cache_v->nb[1],
                                        static_cast<size_t>(n_past) * ggml_element_size(cache_v));
    ggml_build_forward_expand(graph, ggml_cpy(ctx, ggml_transpose(ctx, v), v_slot));

    // Per head: scores [n_kv, n, n_head] = K^T Q, then softmax(scores / sqrt(head_dim)) with
    // future positions masked, then V * weights. One sequence per product, so the causal
    // mask is the diagonal one (each sequence's past is its own cache, nothing to mask across).
    ggml_tensor * keys = cached_heads(ctx, cache_k, head_dim, n_head, n_kv);
    ggml_tensor * queries = ggml_permute(ctx, q, 0, 2, 1, 3);  // [head_dim, n, n_head]
    ggml_tensor * scores = ggml_mul_mat(ctx, keys, queries);   // [n_kv, n, n_head]
    if (n > 1) scores = ggml_diag_mask_inf(ctx, scores, n_past);
    ggml_tensor * weights = ggml_soft_max_ext(ctx, scores, /*mask=*/nullptr,
                                              1.0f / std::sqrt(static_cast<float>(head_dim)), /*max_bias=*/0.0f);

    ggml_tensor * values = ggml_view_3d(ctx, cache_v, n_kv, head_dim, n_head, cache_v->nb[1],
                                        static_cast<size_t>(head_dim) * cache_v->nb[1], 0);
    ggml_tensor * heads = ggml_mul_mat(ctx, values, weights);  // [head_dim, n, n_head]
    return ggml_cont_2d(ctx, ggml_permute(ctx, heads, 0, 2, 1, 3), n_embd, n);
}

// Joins [n_embd, n_i] pieces along the token dimension, pairwise (each element is copied about
// log2(pieces) times, not once per piece as a chain of concatenations would).
ggml_tensor * join_tokens(ggml_context * ctx, std::vector<ggml_tensor *> pieces) {
    while (pieces.size() > 1) {
        std::vector<ggml_tensor *> joined;
        for (size_t i = 0; i + 1 < pieces.size(); i += 2) joined.push_back(ggml_concat(ctx, pieces[i], pieces[i + 1], 1));
        if (pieces.size() % 2 == 1) joined.push_back(pieces.back());
        pieces = std::move(joined);
    }
    return pieces.front();
}

// The new tokens' attention, each sequence over its own cache, then the output projection
// (once, over the whole batch).
ggml_tensor * self_attention(ggml_context * ctx, ggml_cgraph * graph, const Model & model,
                             const std::vector<GraphSequence> & sequences, int il, MatmulInput & x,
                             ggml_tensor * positions) {
    const HParams & hp = model.hparams();
    const LayerWeights & w = model.weights().layers[static_cast<size_t>(il)];
    const int64_t head_dim = hp.head_dim(), n_head = hp.n_head;
    const int64_t n_tokens = x.x->ne[1];

    ggml_tensor * q = ggml_reshape_3d(ctx, product(ctx, model, w.attn_q, x), head_dim, n_head, n_tokens);
    ggml_tensor * k = ggml_reshape_3d(ctx, product(ctx, model, w.attn_k, x), head_dim, n_head, n_tokens);
    ggml_tensor * v = product(ctx, model, w.attn_v, x);  // [n_embd, n_tokens]
    q = rotary(ctx, q, positions, hp);
    k = rotary(ctx, k, positions, hp);

    std::vector<ggml_tensor *> merged;
    int64_t first = 0;
    for (const GraphSequence & s : sequences) {
        merged.push_back(sequence_attention(ctx, graph, hp, *s.cache, il, token_columns(ctx, q, 2, first, s.n_tokens),
                                            token_columns(ctx, k, 2, first, s.n_tokens),
                                            token_columns(ctx, v, 1, first, s.n_tokens), s.n_past, s.n_tokens));
        first += s.n_tokens;
    }
    MatmulInput merged_input{join_tokens(ctx, merged)};
    return product(ctx, model, w.attn_output, merged_input);
}

ggml_tensor * feed_forward(ggml_context * ctx, const Model & model, const LayerWeights & w, MatmulInput & x) {
    ggml_tensor * up = ggml_add(ctx, product(ctx, model, w.ffn_up_w, x), w.ffn_up_b);
    // GPT-J's activation is gelu_new, the tanh approximation, which is what ggml_gelu computes.
    MatmulInput activated{ggml_gelu(ctx, up)};
    return ggml_add(ctx, product(ctx, model, w.ffn_down_w, activated), w.ffn_down_b);
}

int64_t count_outputs(const GraphSequence & s) {
    switch (s.outputs) {
        case Outputs::none: return 0;
        case Outputs::last: return 1;
        case Outputs::all: return s.n_tokens;
    }
    return 0;
}

}  // namespace

// About 40 nodes per layer with ggml_mul_mat, 60 with batch_matmul (transposes around each
// product), and about 20 more per sequence for its attention and the join.
size_t forward_graph_size(int n_layer, size_t n_sequences) {
    return 128 + 2 * n_sequences + (96 + 24 * n_sequences) * static_cast<size_t>(n_layer);
}

std::vector<int32_t> output_rows(const std::vector<GraphSequence> & sequences) {
    std::vector<int32_t> rows;
    int32_t first = 0;
    for (const GraphSequence & s : sequences) {
        for (int32_t i = static_cast<int32_t>(s.n_tokens - count_outputs(s)); i < s.n_tokens; ++i) rows.push_back(first + i);
        first += s.n_tokens;
    }
    return rows;
}

ForwardGraph build_forward_graph(ggml_context * ctx, const Model & model, const std::vector<GraphSequence> & sequences) {
    const HParams & hp = model.hparams();
    const Weights & w = model.weights();
    ForwardGraph out{};
    out.graph = ggml_new_graph_custom(ctx, forward_graph_size(hp.n_layer, sequences.size()), /*grads=*/false);

    int64_t n_tokens = 0, n_outputs = 0;
    for (const GraphSequence & s : sequences) {
        n_tokens += s.n_tokens;
        n_outputs += count_outputs(s);
    }
    out.tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens);
    out.positions = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens);
    ggml_set_input(out.tokens);
    ggml_set_input(out.positions);

    ggml_tensor * x = ggml_get_rows(ctx, w.token_embd, out.tokens);  // [n_embd, n_tokens]
    for (int il = 0; il < hp.n_layer; ++il) {
        const LayerWeights & layer = w.layers[static_cast<size_t>(il)];
        // GPT-J's parallel residual: attention and MLP both read the same ln_1 output.
        MatmulInput normed{layer_norm(ctx, x, layer.attn_norm_w, layer.attn_norm_b, hp.norm_eps)};
        ggml_tensor * attention = self_attention(ctx, out.graph, model, sequences, il, normed, out.positions);
        ggml_tensor * mlp = feed_forward(ctx, model, layer, normed);
        x = ggml_add(ctx, x, ggml_add(ctx, attention, mlp));
    }
    if (n_outputs == 0) return out;  // the cache writes are all that was asked for

    if (n_outputs < n_tokens) {
        if (sequences.size() == 1) {  // the last position: a view, no gather
            x = ggml_view_2d(ctx, x, hp.n_embd, 1, x->nb[1], static_cast<size_t>(n_tokens - 1) * x->nb[1]);
        } else {
            out.output_rows = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_outputs);
            ggml_set_input(out.output_rows);
            x = ggml_get_rows(ctx, x, out.output_rows);
        }
    }
    x = layer_norm(ctx, x, w.output_norm_w, w.output_norm_b, hp.norm_eps);
    MatmulInput final_input{x};
    out.logits = ggml_add(ctx, product(ctx, model, w.output_w, final_input), w.output_b);
    ggml_set_output(out.logits);
    ggml_build_forward_expand(out.graph, out.logits);
    return out;
}

}  // namespace gptj
