// Several sessions' new tokens evaluated together: one forward graph per step reads each
// weight once for all of them (generation is bound by reading the weights, so N sequences
// decode for little more than the cost of one). The sessions keep their own KV caches and
// histories; the evaluator owns the compute buffers and threads.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "gptj/evaluator.h"
#include "gptj/session.h"
#include "gptj/threads.h"

namespace gptj {

// One session's part of a batched call: its new tokens, and where the logits after the last
// one go (n_vocab floats; null when they are not wanted, as for a prompt chunk before its end),
// or, with all_logits, the logits after every one of them (n_vocab floats per token, in order:
// a drafted continuation is verified against each position's own).
struct BatchItem {
    Session * session;
    const std::vector<int32_t> * tokens;
    float * logits;
    bool all_logits = false;
};

class BatchEvaluator {
public:
    // n_threads 0: adaptive, up to the physical cores (as a Session's). n_batch: the most
    // tokens, all sessions together, in one graph.
    BatchEvaluator(std::shared_ptr<const Model> model, int n_threads, int n_batch);

    // Appends each item's tokens to its session's history, evaluating all of them together
    // (n_batch tokens per graph; a longer call takes several, each session's tokens in order).
    // Checked before anything runs (Error(invalid_argument) naming "items[i]" for no items, no
    // tokens, an id out of range, a session twice or of another model; Error(context_full) for
    // tokens that do not fit); after a failure or an interrupt every session is back at its
    // history before the call.
    void evaluate(const std::vector<BatchItem> & items, const InterruptCheck & interrupted = nullptr);

    const Model & model() const { return *model_; }
    int n_batch() const { return n_batch_; }
    int n_threads() const { return threads_.max_threads(); }
    int n_threads_last_used() const { return threads_.last_used(); }
    bool adaptive_threads() const { return threads_.adaptive(); }
    void set_n_threads(int n_threads);

private:
    void check(const std::vector<BatchItem> & items) const;

    std::shared_ptr<const Model> model_;
    int n_batch_;
    ThreadCountPolicy threads_{1, false};
    Evaluator evaluator_;
};

}  // namespace gptj
