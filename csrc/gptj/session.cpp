#include "gptj/session.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <string>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gptj/error.h"
#include "gptj/ggml_log.h"
#include "gptj/graph.h"
#include "gptj/memory.h"
#include "gptj/threads.h"

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

}  // namespace

int resolve_n_ctx(const HParams & hparams, int requested) {
    if (requested < 0) throw Error(Error::Kind::invalid_argument, "n_ctx must be positive, got " + std::to_string(requested));
    return requested == 0 ? hparams.n_ctx_train : requested;
}

Session::Session(std::shared_ptr<const Model> model, SessionParams params)
    : model_(std::move(model)),
      cache_(model_->hparams(), resolve_n_ctx(model_->hparams(), params.n_ctx)),
      n_batch_(params.n_batch) {
    if (n_batch_ <= 0) throw Error(Error::Kind::invalid_argument, "n_batch must be positive, got " + std::to_string(n_batch_));
    n_batch_ = std::min(n_batch_, cache_.n_ctx());

    backend_.reset(ggml_backend_cpu_init());
    if (!backend_) throw Error(Error::Kind::evaluation, "cannot start ggml's CPU backend");
    set_n_threads(params.n_threads);

    const size_t graph_size = forward_graph_size(model_->hparams().n_layer);
    graph_memory_.resize(ggml_tensor_overhead() * graph_size + ggml_graph_overhead_custom(graph_size, false));

    // Size the compute buffers once for the largest graph a prompt batch builds: a full batch
    // at the end of the context. Smaller graphs reuse the same memory. (Asking for the logits
    // of every position, as Model.logits does, grows them once more.)
    allocator_.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_.get())));
    ggml_init_params init{graph_memory_.size(), graph_memory_.data(), /*no_alloc=*/true};
    ggml_context_ptr ctx(ggml_init(init));
    const ForwardGraph worst = build_forward_graph(ctx.get(), *model_, cache_, cache_.n_ctx() - n_batch_, n_batch_, false);
    // Measured before anything is allocated: under overcommit a compute buffer larger than the
    // machine is granted, and the process killed once a full context touches it.
    size_t compute_size = 0;
    ggml_gallocr_reserve_n_size(allocator_.get(), worst.graph, nullptr, nullptr, &compute_size);
    const double compute_bytes = static_cast<double>(compute_size);
    const double cache_bytes = static_cast<double>(cache_.size_bytes());
    const size_t memory = physical_memory_bytes();
    if (memory > 0 && compute_bytes + cache_bytes > static_cast<double>(memory)) {
        throw Error(Error::Kind::invalid_argument,
                    "n_ctx = " + std::to_string(cache_.n_ctx()) +
                        (params.n_ctx == 0 ? " (the model's gptj.context_length)" : "") + " with n_batch = " +
                        std::to_string(n_batch_) + " needs " + gib(cache_bytes) + " of KV cache and " + gib(compute_bytes) +
                        " of compute buffers, more than this machine's " + gib(static_cast<double>(memory)) +
                        " of memory: use a smaller n_ctx or n_batch");
    }
    clear_last_ggml_error();
    if (!ggml_gallocr_reserve(allocator_.get(), worst.graph)) {
        throw Error(Error::Kind::evaluation, "cannot allocate the compute buffers: " + last_ggml_error());
    }
}

void Session::set_n_threads(int n_threads) {
    checked_thread_count(n_threads);
    // Set explicitly: ggml's CPU backend otherwise runs GGML_DEFAULT_N_THREADS (4) threads
    // whatever the machine has, which on 2 cores made a mat-vec 15x slower.
    threads_ = n_threads == 0 ? ThreadCountPolicy(physical_core_count(), /*adaptive=*/true)
                              : ThreadCountPolicy(n_threads, /*adaptive=*/false);
}

void Session::truncate(int n_keep) {
    if (n_keep < 0) throw Error(Error::Kind::invalid_argument, "cannot keep a negative number of tokens");
    if (n_keep < n_past()) history_.resize(static_cast<size_t>(n_keep));
}

void Session::discard(int n_keep, int n_discard, const InterruptCheck & interrupted) {
    // In 64 bits: n_keep + n_discard may overflow an int.
    if (n_keep < 0 || n_discard < 0 || int64_t{n_keep} + n_discard > n_past()) {
        throw Error(Error::Kind::invalid_argument, "cannot discard " + std::to_string(n_discard) + " tokens after " +
                                                       std::to_string(n_keep) + " of " + std::to_string(n_past()));
    }
    if (n_discard == 0) return;
    const std::vector<int32_t> rest(history_.begin() + n_keep + n_discard, history_.end());
    history_.resize(static_cast<size_t>(n_keep));
    std::vector<float> logits;
    evaluate(rest, /*all_logits=*/false, logits, interrupted);
}

void Session::evaluate(const std::vector<int32_t> & tokens, bool all_logits, std::vector<float> & logits,
                       const InterruptCheck & interrupted) {
    const int32_t n_vocab = model_->hparams().n_vocab;
    for (const int32_t id : tokens) {
        if (id < 0 || id >= n_vocab) {
            throw Error(Error::Kind::invalid_argument,
                        "token id " + std::to_string(id) + " is out of range [0, " + std::to_string(n_vocab) + ")");
        }
    }
    const int n_tokens = static_cast<int>(tokens.size());
    if (n_tokens > cache_.n_ctx() - n_past()) {
        throw Error(Error::Kind::context_full,
                    "the context is full: " + std::to_string(n_past()) + " tokens held + " + std::to_string(n_tokens) +
                        " new > n_ctx " + std::to_string(cache_.n_ctx()));
    }
    logits.resize(static_cast<size_t>(n_vocab) * static_cast<size_t>(all_logits ? n_tokens : (n_tokens > 0 ? 1 : 0)));

    const size_t n_past_before = history_.size();
    try {
        for (int start = 0; start < n_tokens; start += n_batch_) {
            if (start > 0 && interrupted && interrupted()) {
                throw Error(Error::Kind::interrupted, "interrupted after " + std::to_string(start) + " of " +
                                                          std::to_string(n_tokens) + " tokens");
            }
            const int n = std::min(n_batch_, n_tokens - start);
            const bool last = start + n == n_tokens;
            float * out = all_logits ? logits.data() + static_cast<size_t>(start) * n_vocab : (last ? logits.data() : nullptr);
            evaluate_batch(tokens.data() + start, n, all_logits, out, interrupted);
            history_.insert(history_.end(), tokens.begin() + start, tokens.begin() + start + n);
        }
    } catch (const Error & e) {
        // An interrupt keeps the batches done (the caller asked to stop, not to undo them).
        if (e.kind() != Error::Kind::interrupted) history_.resize(n_past_before);  // later cache rows are stale
        throw;
    } catch (...) {
        history_.resize(n_past_before);
        throw;
    }
}

void Session::evaluate_batch(const int32_t * tokens, int n_tokens, bool all_logits, float * logits,
                             const InterruptCheck & interrupted) {
    const int n_past = this->n_past();
    ggml_init_params init{graph_memory_.size(), graph_memory_.data(), /*no_alloc=*/true};
    ggml_context_ptr ctx(ggml_init(init));
    const ForwardGraph fg = build_forward_graph(ctx.get(), *model_, cache_, n_past, n_tokens, all_logits);

    clear_last_ggml_error();
    if (!ggml_gallocr_alloc_graph(allocator_.get(), fg.graph)) {
        throw Error(Error::Kind::evaluation, "cannot allocate the compute buffers: " + last_ggml_error());
    }
    std::vector<int32_t> positions(static_cast<size_t>(n_tokens));
    std::iota(positions.begin(), positions.end(), n_past);
    ggml_backend_tensor_set(fg.tokens, tokens, 0, ggml_nbytes(fg.tokens));
    ggml_backend_tensor_set(fg.positions, positions.data(), 0, ggml_nbytes(fg.positions));

    const double started = steady_seconds();
    const int n_threads = threads_.next(started);
    ggml_backend_cpu_set_n_threads(backend_.get(), n_threads);
    const double cpu_before = thread_cpu_seconds();
    AbortState abort_state{&interrupted, started + kInterruptCheckSeconds};
    ggml_backend_cpu_set_abort_callback(backend_.get(), interrupted ? abort_requested : nullptr, &abort_state);
    const ggml_status status = ggml_backend_graph_compute(backend_.get(), fg.graph);
    ggml_backend_cpu_set_abort_callback(backend_.get(), nullptr, nullptr);  // abort_state goes out of scope
    const double finished = steady_seconds();
    threads_.record(n_threads, finished - started, thread_cpu_seconds() - cpu_before, finished);
    if (abort_state.stopped) {
        throw Error(Error::Kind::interrupted, "interrupted during a batch of " + std::to_string(n_tokens) + " tokens");
    }
    if (status != GGML_STATUS_SUCCESS) {
        throw Error(Error::Kind::evaluation, std::string("ggml graph computation failed: ") + ggml_status_to_string(status));
    }
    if (logits != nullptr) {
        ggml_backend_tensor_get(fg.logits, logits, 0, ggml_nbytes(fg.logits));
    }
}

}  // namespace gptj
