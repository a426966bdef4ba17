#include "gptj/generation.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "gptj/error.h"

namespace gptj {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// A NaN reaching the sampler would read as a sampling problem; it is the model's (weights
// holding NaN or inf, or an overflow in f16).
void check_no_nan(const float * logits, size_t n_vocab, int n_past, const std::string & where) {
    for (size_t i = 0; i < n_vocab; ++i) {
        if (std::isnan(logits[i])) {
            throw Error(Error::Kind::evaluation, where + "the model produced NaN logits (first at token id " +
                                                     std::to_string(i) + ", after " + std::to_string(n_past) +
                                                     " tokens): its weights may hold NaN or inf values");
        }
    }
}

void sample_into(Step & step, const float * logits, const std::vector<int32_t> & history, Sampler & sampler,
                 bool want_logprob, int32_t n_top_logprobs) {
    const Clock::time_point sampled = Clock::now();
    step.token = sampler.sample(logits, history);
    step.logprob = want_logprob ? log_probability(logits, sampler.n_vocab(), step.token)
                                : std::numeric_limits<float>::quiet_NaN();
    if (n_top_logprobs > 0) step.top_logprobs = top_log_probabilities(logits, sampler.n_vocab(), n_top_logprobs);
    step.sample_ms = ms_since(sampled);
}

void check_sampler(const Sampler & sampler, const Model & model, const std::string & where) {
    if (sampler.n_vocab() != model.hparams().n_vocab) {
        throw Error(Error::Kind::invalid_argument, where + "the Sampler was made for " + std::to_string(sampler.n_vocab()) +
                                                       " tokens, the model has " +
                                                       std::to_string(model.hparams().n_vocab));
    }
}

}  // namespace

Step evaluate_and_sample(Session & session, const std::vector<int32_t> & tokens, Sampler & sampler,
                         bool want_logprob, std::vector<float> & logits, int32_t n_top_logprobs,
                         const InterruptCheck & interrupted) {
    if (tokens.empty()) {
        throw Error(Error::Kind::invalid_argument, "evaluate_and_sample needs at least one token to evaluate");
    }
    check_sampler(sampler, session.model(), "");
    Step step{};
    const Clock::time_point start = Clock::now();
    session.evaluate(tokens, /*all_logits=*/false, logits, interrupted);
    step.eval_ms = ms_since(start);
    check_no_nan(logits.data(), logits.size(), session.n_past(), "");
    sample_into(step, logits.data(), session.history(), sampler, want_logprob, n_top_logprobs);
    return step;
}

std::vector<Step> evaluate_and_sample(BatchEvaluator & evaluator, const std::vector<BatchStepItem> & items,
                                      const InterruptCheck & interrupted) {
    const size_t n_vocab = static_cast<size_t>(evaluator.model().hparams().n_vocab);
    std::vector<float> logits(n_vocab * items.size());
    std::vector<BatchItem> batch;
    for (size_t i = 0; i < items.size(); ++i) {
        const std::string where = "items[" + std::to_string(i) + "]: ";
        if (items[i].sampler != nullptr) check_sampler(*items[i].sampler, evaluator.model(), where);
        if (items[i].n_top_logprobs < 0) {
            throw Error(Error::Kind::invalid_argument, where + "top_logprobs must be >= 0");
        }
        batch.push_back({items[i].session, &items[i].tokens, items[i].sampler ? logits.data() + i * n_vocab : nullptr});
    }
    const Clock::time_point start = Clock::now();
    evaluator.evaluate(batch, interrupted);
    const double eval_ms = ms_since(start);

    std::vector<Step> steps(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
        Step & step = steps[i];
        step.eval_ms = eval_ms;
        step.token = -1;
        step.logprob = std::numeric_limits<float>::quiet_NaN();
        if (items[i].sampler == nullptr) continue;
        const float * own = logits.data() + i * n_vocab;
        const Session & session = *items[i].session;
        check_no_nan(own, n_vocab, session.n_past(), "items[" + std::to_string(i) + "]: ");
        sample_into(step, own, session.history(), *items[i].sampler, items[i].want_logprob, items[i].n_top_logprobs);
    }
    return steps;
}

LoopResult generate_loop(Session & session, const std::vector<int32_t> & prompt, int n_tokens, Sampler & sampler,
                         const InterruptCheck & interrupted) {
    LoopResult result{};
    std::vector<float> logits;
    std::vector<int32_t> pending = prompt;
    Clock::time_point start = Clock::now();
    Clock::time_point next_check = start;
    for (int i = 0; i < n_tokens; ++i) {
        // Between tokens as well as inside each evaluation, but not at every token: the check
        // may wait for Python's GIL.
        if (interrupted && Clock::now() >= next_check) {
            next_check = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(kInterruptCheckSeconds));
            if (i > 0 && interrupted()) {
                throw Error(Error::Kind::interrupted, "interrupted after " + std::to_string(i) + " tokens");
            }
        }
        const Step step = evaluate_and_sample(session, pending, sampler, false, logits, 0, interrupted);
        result.tokens.push_back(step.token);
        pending.assign(1, step.token);
        if (i == 0) {
            result.prompt_ms = ms_since(start);
            start = Clock::now();
        }
    }
    if (n_tokens > 1) result.generation_ms = ms_since(start);
    return result;
}

}  // namespace gptj
