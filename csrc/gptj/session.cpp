#include "gptj/session.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "gptj/error.h"
#include "gptj/memory.h"
#include "gptj/threads.h"

namespace gptj {

int resolve_n_ctx(const HParams & hparams, int requested) {
    if (requested < 0) throw Error(Error::Kind::invalid_argument, "n_ctx must be positive, got " + std::to_string(requested));
    return requested == 0 ? hparams.n_ctx_train : requested;
}

Session::Session(std::shared_ptr<const Model> model, SessionParams params)
    : model_(std::move(model)),
      cache_(model_->hparams(), resolve_n_ctx(model_->hparams(), params.n_ctx), params.cache),
      n_batch_(params.n_batch) {
    if (n_batch_ <= 0) throw Error(Error::Kind::invalid_argument, "n_batch must be positive, got " + std::to_string(n_batch_));
    n_batch_ = std::min(n_batch_, cache_.n_ctx());
    set_n_threads(params.n_threads);

    // The compute buffers of the largest graph a prompt batch builds, measured before anything
    // is allocated: under overcommit a compute buffer larger than the machine is granted, and
    // the process killed once a full context touches it. (Asking for the logits of every
    // position, as Model.logits does, grows them once more.)
    const double compute_bytes = static_cast<double>(Evaluator::compute_bytes(*model_, worst_batch()));
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
}

std::vector<GraphSequence> Session::worst_batch() const {
    return {{&cache_, cache_.n_ctx() - n_batch_, n_batch_, Outputs::last}};
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

void Session::copy_from(const Session & source, int n_tokens) {
    if (&source.model() != model_.get()) {
        throw Error(Error::Kind::invalid_argument, "cannot copy a session of another model");
    }
    if (n_tokens < 0 || n_tokens > source.n_past()) {
        throw Error(Error::Kind::invalid_argument, "cannot copy " + std::to_string(n_tokens) + " tokens from a session holding " +
                                                       std::to_string(source.n_past()));
    }
    if (n_tokens > n_ctx()) {
        throw Error(Error::Kind::context_full, "cannot copy " + std::to_string(n_tokens) + " tokens into a context of " +
                                                   std::to_string(n_ctx()));
    }
    if (&source == this) {
        truncate(n_tokens);
        return;
    }
    cache_.copy_from(source.cache_, n_tokens);
    history_.assign(source.history_.begin(), source.history_.begin() + n_tokens);
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
    if (n_tokens > 0 && !evaluator_) {
        auto evaluator = std::make_unique<Evaluator>(model_);
        evaluator->reserve(worst_batch());  // sized once for every batch this session evaluates
        evaluator_ = std::move(evaluator);
    }

    const size_t n_past_before = history_.size();
    try {
        for (int start = 0; start < n_tokens; start += n_batch_) {
            if (start > 0 && interrupted && interrupted()) {
                throw Error(Error::Kind::interrupted, "interrupted after " + std::to_string(start) + " of " +
                                                          std::to_string(n_tokens) + " tokens");
            }
            const int n = std::min(n_batch_, n_tokens - start);
            const bool last = start + n == n_tokens;
            // The batches before the last need no logits (unless every position's are asked for).
            const Outputs outputs = all_logits ? Outputs::all : last ? Outputs::last : Outputs::none;
            float * out = all_logits ? logits.data() + static_cast<size_t>(start) * n_vocab : (last ? logits.data() : nullptr);
            evaluator_->evaluate({{&cache_, n_past(), tokens.data() + start, n, outputs, out}}, threads_, interrupted);
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

}  // namespace gptj
