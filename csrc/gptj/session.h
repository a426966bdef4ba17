// The mutable half of GPT-J: a KV cache, the tokens it holds, and the buffers and threads
// that evaluate new tokens against it. Many sessions can share one Model. A Session is not
// thread-safe: use one per thread (the Python layer enforces that).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "gptj/evaluator.h"
#include "gptj/kv_cache.h"
#include "gptj/model.h"
#include "gptj/threads.h"

namespace gptj {

struct SessionParams {
    int n_ctx = 0;      // 0: the model's training context (gptj.context_length)
    int n_threads = 0;  // 0: up to the physical cores, fewer while they are busy (ThreadCountPolicy)
    int n_batch = 512;  // prompt tokens evaluated per graph
    CacheLayout cache;  // f16 with plain attention unless asked otherwise
};

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

    // Makes this session hold source's first n_tokens tokens: their keys and values are copied
    // (one prompt evaluated once, then several completions go on from copies). Throws
    // Error(invalid_argument) when source holds fewer, they do not fit, or the sessions belong
    // to different models.
    void copy_from(const Session & source, int n_tokens);

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
    const CacheLayout & cache_layout() const { return cache_.layout(); }

private:
    friend class BatchEvaluator;  // evaluates into the cache and extends the history

    // The largest graph one of this session's evaluations builds: a full batch at the end of the context.
    std::vector<GraphSequence> worst_batch() const;

    std::shared_ptr<const Model> model_;
    KvCache cache_;
    int n_batch_;
    ThreadCountPolicy threads_{1, false};
    // Made at the first evaluation: a session that only a BatchEvaluator drives never
    // allocates compute buffers of its own.
    std::unique_ptr<Evaluator> evaluator_;
    std::vector<int32_t> history_;
};

int resolve_n_ctx(const HParams & hparams, int requested);

}  // namespace gptj
