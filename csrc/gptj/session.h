// The mutable half of GPT-J: a KV cache, the tokens it holds, and the buffers and threads
// that evaluate new tokens against it. Many sessions can share one Model. A Session is not
// thread-safe: use one per thread (the Python layer enforces that).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "ggml-cpp.h"
#include "gptj/kv_cache.h"
#include "gptj/model.h"
#include "gptj/threads.h"

namespace gptj {

struct SessionParams {
    int n_ctx = 0;      // 0: the model's training context (gptj.context_length)
    int n_threads = 0;  // 0: up to the physical cores, fewer while they are busy (ThreadCountPolicy)
    int n_batch = 512;  // prompt tokens evaluated per graph
};

// Asked, during a long evaluation, whether to stop (the bindings run Python's signal handlers
// in it, so that Ctrl-C works): between batches, and about every kInterruptCheckSeconds inside
// one (through ggml's abort callback). Returning true stops the evaluation with
// Error(interrupted).
using InterruptCheck = std::function<bool()>;
constexpr double kInterruptCheckSeconds = 0.1;

class Session {
public:
    Session(std::shared_ptr<const Model> model, SessionParams params);

    // Appends tokens to the history and evaluates them, n_batch at a time. logits receives
    // n_vocab floats per new token (all_logits) or for the last token only. Throws
    // Error(invalid_argument) for an id out of range and Error(context_full) when the tokens
    // do not fit; on either the session is unchanged. When `interrupted` asks to stop, throws
    // Error(interrupted) and the history keeps the batches already done.
    void evaluate(const std::vector<int32_t> & tokens, bool all_logits, std::vector<float> & logits,
                  const InterruptCheck & interrupted = nullptr);

    // Forgets every position from n_keep on (they are overwritten by the next evaluation).
    void truncate(int n_keep);

    // Makes room: drops the n_discard tokens after the first n_keep and re-evaluates the rest
    // at their new positions (GPT-J's rotary keys depend on the position, so cached keys
    // cannot simply move). On an error only the first n_keep tokens remain (with the batches
    // re-evaluated before an interrupt).
    void discard(int n_keep, int n_discard, const InterruptCheck & interrupted = nullptr);

    const Model & model() const { return *model_; }
    const std::vector<int32_t> & history() const { return history_; }
    int n_past() const { return static_cast<int>(history_.size()); }
    int n_ctx() const { return cache_.n_ctx(); }
    int n_batch() const { return n_batch_; }
    // The most threads an evaluation uses (all of them, for a count the user chose).
    int n_threads() const { return threads_.max_threads(); }
    // Threads the latest evaluation used (fewer than n_threads() while the cores are busy).
    int n_threads_last_used() const { return threads_.last_used(); }
    bool adaptive_threads() const { return threads_.adaptive(); }
    // 0: adaptive, up to the physical cores; otherwise exactly n_threads.
    void set_n_threads(int n_threads);
    size_t kv_cache_bytes() const { return cache_.size_bytes(); }

private:
    void evaluate_batch(const int32_t * tokens, int n_tokens, bool all_logits, float * logits,
                        const InterruptCheck & interrupted);

    std::shared_ptr<const Model> model_;
    KvCache cache_;
    int n_batch_;
    ThreadCountPolicy threads_{1, false};
    ggml_backend_ptr backend_;
    ggml_gallocr_ptr allocator_;         // compute buffers: sized once, reused by every batch
    std::vector<uint8_t> graph_memory_;  // tensor and graph headers, rebuilt per batch
    std::vector<int32_t> history_;
};

int resolve_n_ctx(const HParams & hparams, int requested);

}  // namespace gptj
