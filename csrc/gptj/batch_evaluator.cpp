#include "gptj/batch_evaluator.h"

#include <algorithm>
#include <string>
#include <unordered_set>

#include "gptj/error.h"

namespace gptj {
namespace {

std::string item_name(size_t i) { return "items[" + std::to_string(i) + "]"; }

}  // namespace

BatchEvaluator::BatchEvaluator(std::shared_ptr<const Model> model, int n_threads, int n_batch)
    : model_(std::move(model)), n_batch_(n_batch), evaluator_(model_) {
    if (n_batch_ <= 0) throw Error(Error::Kind::invalid_argument, "n_batch must be positive, got " + std::to_string(n_batch_));
    set_n_threads(n_threads);
}

void BatchEvaluator::set_n_threads(int n_threads) {
    checked_thread_count(n_threads);
    threads_ = n_threads == 0 ? ThreadCountPolicy(physical_core_count(), /*adaptive=*/true)
                              : ThreadCountPolicy(n_threads, /*adaptive=*/false);
}

void BatchEvaluator::check(const std::vector<BatchItem> & items) const {
    if (items.empty()) throw Error(Error::Kind::invalid_argument, "a batched evaluation needs at least one item");
    const int32_t n_vocab = model_->hparams().n_vocab;
    std::unordered_set<const Session *> seen;
    for (size_t i = 0; i < items.size(); ++i) {
        const Session & session = *items[i].session;
        const std::vector<int32_t> & tokens = *items[i].tokens;
        if (&session.model() != model_.get()) {
            throw Error(Error::Kind::invalid_argument, item_name(i) + ": the session belongs to another model");
        }
        if (!seen.insert(&session).second) {
            throw Error(Error::Kind::invalid_argument, item_name(i) + ": the same session is in the batch twice");
        }
        if (tokens.empty()) throw Error(Error::Kind::invalid_argument, item_name(i) + ": no tokens to evaluate");
        for (const int32_t id : tokens) {
            if (id < 0 || id >= n_vocab) {
                throw Error(Error::Kind::invalid_argument, item_name(i) + ": token id " + std::to_string(id) +
                                                               " is out of range [0, " + std::to_string(n_vocab) + ")");
            }
        }
        if (tokens.size() > static_cast<size_t>(session.n_ctx() - session.n_past())) {
            throw Error(Error::Kind::context_full, item_name(i) + ": the context is full: " +
                                                       std::to_string(session.n_past()) + " tokens held + " +
                                                       std::to_string(tokens.size()) + " new > n_ctx " +
                                                       std::to_string(session.n_ctx()));
        }
    }
}

void BatchEvaluator::evaluate(const std::vector<BatchItem> & items, const InterruptCheck & interrupted) {
    check(items);
    std::vector<size_t> n_past_before, done(items.size(), 0);
    for (const BatchItem & item : items) n_past_before.push_back(item.session->history_.size());
    try {
        // Each graph takes up to n_batch tokens: every unfinished item's next tokens in order
        // (all decode steps fit in one graph; a long prompt spreads over several).
        for (bool first = true, more = true; more; first = false) {
            if (!first && interrupted && interrupted()) {
                throw Error(Error::Kind::interrupted, "interrupted between the graphs of a batched evaluation");
            }
            std::vector<SequenceSpan> spans;
            std::vector<size_t> owners;
            int budget = n_batch_;
            for (size_t i = 0; i < items.size() && budget > 0; ++i) {
                const std::vector<int32_t> & tokens = *items[i].tokens;
                if (done[i] == tokens.size()) continue;
                const int n = static_cast<int>(std::min<size_t>(static_cast<size_t>(budget), tokens.size() - done[i]));
                const bool last = done[i] + static_cast<size_t>(n) == tokens.size();
                Session & session = *items[i].session;
                const BatchItem & item = items[i];
                if (item.all_logits && item.logits != nullptr) {
                    const size_t n_vocab = static_cast<size_t>(model_->hparams().n_vocab);
                    spans.push_back({&session.cache_, session.n_past(), tokens.data() + done[i], n, Outputs::all,
                                     item.logits + done[i] * n_vocab});
                } else {
                    const bool wanted = last && item.logits != nullptr;
                    spans.push_back({&session.cache_, session.n_past(), tokens.data() + done[i], n,
                                     wanted ? Outputs::last : Outputs::none, wanted ? item.logits : nullptr});
                }
                owners.push_back(i);
                budget -= n;
            }
            evaluator_.evaluate(spans, threads_, interrupted);
            for (size_t j = 0; j < spans.size(); ++j) {
                std::vector<int32_t> & history = items[owners[j]].session->history_;
                history.insert(history.end(), spans[j].tokens, spans[j].tokens + spans[j].n_tokens);
                done[owners[j]] += static_cast<size_t>(spans[j].n_tokens);
            }
            more = false;
            for (size_t i = 0; i < items.size(); ++i) more = more || done[i] < items[i].tokens->size();
        }
    } catch (...) {
        // The cache rows past each history are stale and overwritten by the next evaluation.
        for (size_t i = 0; i < items.size(); ++i) items[i].session->history_.resize(n_past_before[i]);
        throw;
    }
}

}  // namespace gptj
