#include "gptj/speculation.h"

#include <chrono>
#include <limits>
#include <string>

#include "gptj/error.h"
#include "gptj/step_sampling.h"

namespace gptj {
namespace {

using Clock = std::chrono::steady_clock;

void check_draft(const std::vector<int32_t> & tokens, const std::vector<int32_t> & draft, const std::string & where) {
    if (tokens.empty()) throw Error(Error::Kind::invalid_argument, where + "no tokens to evaluate");
    if (!draft.empty() && tokens.size() != 1) {
        throw Error(Error::Kind::invalid_argument, where + "a draft follows exactly one token (a generation step's), got " +
                                                       std::to_string(tokens.size()) + " tokens before it");
    }
}

// Samples row after row of `logits` (row 0: after the step's token; row i: after draft[i-1])
// while the sample equals the draft, then truncates the session past the rejected drafts.
// n_before: the session's length before the step's token.
std::vector<Step> accept_drafts(Session & session, size_t n_before, const std::vector<int32_t> & draft,
                                const float * logits, Sampler & sampler, bool want_logprob, int32_t n_top,
                                double eval_ms, const std::string & where) {
    const size_t n_vocab = static_cast<size_t>(session.model().hparams().n_vocab);
    // The penalties' window at row i: everything before it, as a plain step would see.
    std::vector<int32_t> history(session.history().begin(), session.history().begin() + n_before + 1);
    std::vector<Step> steps;
    for (size_t row = 0; row <= draft.size(); ++row) {
        const float * own = logits + row * n_vocab;
        check_no_nan(own, n_vocab, static_cast<int>(history.size()), where);
        Step step{};
        step.eval_ms = row == 0 ? eval_ms : 0.0;
        sample_into(step, own, history, sampler, want_logprob, n_top);
        steps.push_back(std::move(step));
        if (row == draft.size() || steps.back().token != draft[row]) break;
        history.push_back(draft[row]);
    }
    // Rows past the first disagreement hold keys and values of tokens that are not the
    // sequence's: forget them (the next evaluation overwrites them).
    session.truncate(static_cast<int>(n_before + steps.size()));
    return steps;
}

}  // namespace

std::vector<Step> evaluate_and_verify(Session & session, const std::vector<int32_t> & tokens,
                                      const std::vector<int32_t> & draft, Sampler & sampler, bool want_logprob,
                                      std::vector<float> & logits, int32_t n_top_logprobs,
                                      const InterruptCheck & interrupted) {
    if (draft.empty()) {
        return {evaluate_and_sample(session, tokens, sampler, want_logprob, logits, n_top_logprobs, interrupted)};
    }
    check_draft(tokens, draft, "");
    check_sampler(sampler, session.model(), "");
    if (n_top_logprobs < 0) throw Error(Error::Kind::invalid_argument, "top_logprobs must be >= 0");
    const size_t n_before = session.history().size();
    std::vector<int32_t> evaluated = tokens;
    evaluated.insert(evaluated.end(), draft.begin(), draft.end());
    const Clock::time_point start = Clock::now();
    session.evaluate(evaluated, /*all_logits=*/true, logits, interrupted);
    const double eval_ms = ms_since(start);
    try {
        return accept_drafts(session, n_before, draft, logits.data(), sampler, want_logprob, n_top_logprobs, eval_ms, "");
    } catch (...) {
        session.truncate(static_cast<int>(n_before));  // a NaN: the step did not happen
        throw;
    }
}

std::vector<std::vector<Step>> evaluate_and_verify(BatchEvaluator & evaluator, const std::vector<BatchStepItem> & items,
                                                   const InterruptCheck & interrupted) {
    const size_t n_vocab = static_cast<size_t>(evaluator.model().hparams().n_vocab);
    // Each item's logits rows, one after another: one per draft token plus the step's own.
    std::vector<size_t> first_row;
    size_t n_rows = 0;
    for (size_t i = 0; i < items.size(); ++i) {
        const std::string where = "items[" + std::to_string(i) + "]: ";
        const BatchStepItem & item = items[i];
        if (item.sampler != nullptr) check_sampler(*item.sampler, evaluator.model(), where);
        if (item.n_top_logprobs < 0) throw Error(Error::Kind::invalid_argument, where + "top_logprobs must be >= 0");
        if (!item.draft.empty()) {
            check_draft(item.tokens, item.draft, where);
            if (item.sampler == nullptr) {
                throw Error(Error::Kind::invalid_argument, where + "a draft needs a sampler to verify it");
            }
        }
        first_row.push_back(n_rows);
        n_rows += item.sampler == nullptr ? 0 : 1 + item.draft.size();
    }
    std::vector<float> logits(n_vocab * n_rows);
    std::vector<std::vector<int32_t>> evaluated(items.size());
    std::vector<BatchItem> batch;
    std::vector<size_t> n_before;
    for (size_t i = 0; i < items.size(); ++i) {
        const BatchStepItem & item = items[i];
        evaluated[i] = item.tokens;
        evaluated[i].insert(evaluated[i].end(), item.draft.begin(), item.draft.end());
        float * rows = item.sampler != nullptr ? logits.data() + first_row[i] * n_vocab : nullptr;
        batch.push_back({item.session, &evaluated[i], rows, /*all_logits=*/!item.draft.empty()});
        n_before.push_back(item.session->history().size());
    }
    const Clock::time_point start = Clock::now();
    evaluator.evaluate(batch, interrupted);
    const double eval_ms = ms_since(start);

    std::vector<std::vector<Step>> results(items.size());
    try {
        for (size_t i = 0; i < items.size(); ++i) {
            const BatchStepItem & item = items[i];
            if (item.sampler == nullptr) {
                Step step{};
                step.token = -1;
                step.logprob = std::numeric_limits<float>::quiet_NaN();
                step.eval_ms = eval_ms;
                results[i].push_back(step);
                continue;
            }
            // accept_drafts' n_before is the length before the step's single token; an item
            // without a draft may evaluate several (a prompt's last chunk).
            const size_t before_last = n_before[i] + item.tokens.size() - 1;
            results[i] = accept_drafts(*item.session, before_last, item.draft, logits.data() + first_row[i] * n_vocab,
                                       *item.sampler, item.want_logprob, item.n_top_logprobs, eval_ms,
                                       "items[" + std::to_string(i) + "]: ");
        }
    } catch (...) {
        for (size_t i = 0; i < items.size(); ++i) items[i].session->truncate(static_cast<int>(n_before[i]));
        throw;
    }
    return results;
}

}  // namespace gptj
