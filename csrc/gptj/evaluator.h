// What runs forward graphs: ggml's CPU backend, the compute buffers and the graph memory,
// shared by every evaluation of one Session, or of one BatchEvaluator's sessions together.
// The KV caches and token histories belong to the sessions; the thread count to the caller.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "ggml-cpp.h"
#include "gptj/graph.h"
#include "gptj/kv_cache.h"
#include "gptj/model.h"
#include "gptj/threads.h"

namespace gptj {

// Asked, during a long evaluation, whether to stop (the bindings run Python's signal handlers
// in it, so that Ctrl-C works): between batches, and about every kInterruptCheckSeconds inside
// one (through ggml's abort callback). Returning true stops the evaluation with
// Error(interrupted).
using InterruptCheck = std::function<bool()>;
constexpr double kInterruptCheckSeconds = 0.1;

// One sequence's tokens in a graph, and where its logits go: n_vocab floats per output
// position (see Outputs), in order.
struct SequenceSpan {
    KvCache * cache;
    int n_past;
    const int32_t * tokens;
    int n_tokens;
    Outputs outputs;
    float * logits;  // may be null when outputs is none
};

class Evaluator {
public:
    explicit Evaluator(std::shared_ptr<const Model> model);

    // The compute buffer the graph of these spans needs, measured without allocating it.
    static size_t compute_bytes(const Model & model, const std::vector<GraphSequence> & sequences);
    // Allocates the compute buffers for these spans' graph at once (later, larger graphs grow them).
    void reserve(const std::vector<GraphSequence> & sequences);

    // Evaluates the spans in one graph, writing their keys and values into their caches and
    // their logits where they point. The caller advances the histories. Throws
    // Error(interrupted) when `interrupted` asks to stop and Error(evaluation) on a failure.
    void evaluate(const std::vector<SequenceSpan> & spans, ThreadCountPolicy & threads,
                  const InterruptCheck & interrupted);

private:
    ggml_context_ptr graph_context(size_t n_sequences);

    std::shared_ptr<const Model> model_;
    ggml_backend_ptr backend_;
    ggml_gallocr_ptr allocator_;         // compute buffers: grown to the largest graph, reused
    std::vector<uint8_t> graph_memory_;  // tensor and graph headers, rebuilt per graph
};

}  // namespace gptj
