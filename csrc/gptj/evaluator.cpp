#include "gptj/evaluator.h"

#include <chrono>
#include <string>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gptj/error.h"
#include "gptj/ggml_log.h"

namespace gptj {
namespace {

double steady_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ggml's abort callback runs after every graph node on the calling thread; asking the caller
// (which may take Python's GIL) that often would cost more than the nodes, so it asks only
// every kInterruptCheckSeconds.
struct AbortState {
    const InterruptCheck * interrupted;
    double next_check;
    bool stopped = false;
};

bool abort_requested(void * data) {
    auto * state = static_cast<AbortState *>(data);
    if (state->stopped) return true;
    const double now = steady_seconds();
    if (now < state->next_check) return false;
    state->next_check = now + kInterruptCheckSeconds;
    try {
        state->stopped = (*state->interrupted)();
    } catch (...) {  // nothing may unwind through ggml's C code
        state->stopped = true;
    }
    return state->stopped;
}

size_t graph_memory_bytes(const Model & model, size_t n_sequences) {
    const size_t graph_size = forward_graph_size(model.hparams().n_layer, n_sequences);
    return ggml_tensor_overhead() * graph_size + ggml_graph_overhead_custom(graph_size, false);
}

std::vector<GraphSequence> graph_sequences(const std::vector<SequenceSpan> & spans) {
    std::vector<GraphSequence> sequences;
    sequences.reserve(spans.size());
    for (const SequenceSpan & s : spans) sequences.push_back({s.cache, s.n_past, s.n_tokens, s.outputs});
    return sequences;
}

}  // namespace

Evaluator::Evaluator(std::shared_ptr<const Model> model) : model_(std::move(model)) {
    backend_.reset(ggml_backend_cpu_init());
    if (!backend_) throw Error(Error::Kind::evaluation, "cannot start ggml's CPU backend");
    allocator_.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_.get())));
    if (!allocator_) throw Error(Error::Kind::evaluation, "cannot create ggml's graph allocator");
}

size_t Evaluator::compute_bytes(const Model & model, const std::vector<GraphSequence> & sequences) {
    std::vector<uint8_t> memory(graph_memory_bytes(model, sequences.size()));
    ggml_init_params init{memory.size(), memory.data(), /*no_alloc=*/true};
    ggml_context_ptr ctx(ggml_init(init));
    const ForwardGraph graph = build_forward_graph(ctx.get(), model, sequences);
    ggml_gallocr_ptr allocator(ggml_gallocr_new(ggml_backend_cpu_buffer_type()));
    size_t size = 0;
    ggml_gallocr_reserve_n_size(allocator.get(), graph.graph, nullptr, nullptr, &size);
    return size;
}

ggml_context_ptr Evaluator::graph_context(size_t n_sequences) {
    const size_t needed = graph_memory_bytes(*model_, n_sequences);
    if (graph_memory_.size() < needed) graph_memory_.resize(needed);
    ggml_init_params init{graph_memory_.size(), graph_memory_.data(), /*no_alloc=*/true};
    return ggml_context_ptr(ggml_init(init));
}

void Evaluator::reserve(const std::vector<GraphSequence> & sequences) {
    ggml_context_ptr ctx = graph_context(sequences.size());
    const ForwardGraph graph = build_forward_graph(ctx.get(), *model_, sequences);
    clear_last_ggml_error();
    if (!ggml_gallocr_reserve(allocator_.get(), graph.graph)) {
        throw Error(Error::Kind::evaluation, "cannot allocate the compute buffers: " + last_ggml_error());
    }
}

void Evaluator::evaluate(const std::vector<SequenceSpan> & spans, ThreadCountPolicy & threads,
                         const InterruptCheck & interrupted) {
    const std::vector<GraphSequence> sequences = graph_sequences(spans);
    ggml_context_ptr ctx = graph_context(sequences.size());
    const ForwardGraph fg = build_forward_graph(ctx.get(), *model_, sequences);

    clear_last_ggml_error();
    if (!ggml_gallocr_alloc_graph(allocator_.get(), fg.graph)) {
        throw Error(Error::Kind::evaluation, "cannot allocate the compute buffers: " + last_ggml_error());
    }
    std::vector<int32_t> tokens, positions;
    for (const SequenceSpan & s : spans) {
        tokens.insert(tokens.end(), s.tokens, s.tokens + s.n_tokens);
        for (int i = 0; i < s.n_tokens; ++i) positions.push_back(s.n_past + i);
    }
    ggml_backend_tensor_set(fg.tokens, tokens.data(), 0, ggml_nbytes(fg.tokens));
    ggml_backend_tensor_set(fg.positions, positions.data(), 0, ggml_nbytes(fg.positions));
    if (fg.output_rows != nullptr) {
        const std::vector<int32_t> rows = output_rows(sequences);
        ggml_backend_tensor_set(fg.output_rows, rows.data(), 0, ggml_nbytes(fg.output_rows));
    }

    const double started = steady_seconds();
    const int n_threads = threads.next(started);
    ggml_backend_cpu_set_n_threads(backend_.get(), n_threads);
    const double cpu_before = thread_cpu_seconds();
    AbortState abort_state{&interrupted, started + kInterruptCheckSeconds};
    ggml_backend_cpu_set_abort_callback(backend_.get(), interrupted ? abort_requested : nullptr, &abort_state);
    const ggml_status status = ggml_backend_graph_compute(backend_.get(), fg.graph);
    ggml_backend_cpu_set_abort_callback(backend_.get(), nullptr, nullptr);  // abort_state goes out of scope
    const double finished = steady_seconds();
    threads.record(n_threads, finished - started, thread_cpu_seconds() - cpu_before, finished);
    if (abort_state.stopped) {
        throw Error(Error::Kind::interrupted, "interrupted during a batch of " + std::to_string(tokens.size()) + " tokens");
    }
    if (status != GGML_STATUS_SUCCESS) {
        throw Error(Error::Kind::evaluation, std::string("ggml graph computation failed: ") + ggml_status_to_string(status));
    }
    if (fg.logits == nullptr) return;
    const size_t row_bytes = fg.logits->nb[1];
    size_t offset = 0;
    for (const SequenceSpan & s : spans) {
        const size_t n_rows = s.outputs == Outputs::none ? 0 : s.outputs == Outputs::last ? 1 : s.n_tokens;
        if (n_rows > 0 && s.logits != nullptr) ggml_backend_tensor_get(fg.logits, s.logits, offset, n_rows * row_bytes);
        offset += n_rows * row_bytes;
    }
}

}  // namespace gptj
