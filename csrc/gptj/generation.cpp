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

}  // namespace

Step evaluate_and_sample(Session & session, const std::vector<int32_t> & tokens, Sampler & sampler,
                         bool want_logprob, std::vector<float> & logits, int32_t n_top_logprobs,
                         const InterruptCheck & interrupted) {
    if (tokens.empty()) {
        throw Error(Error::Kind::invalid_argument, "evaluate_and_sample needs at least one token to evaluate");
    }
    if (sampler.n_vocab() != session.model().hparams().n_vocab) {
        throw Error(Error::Kind::invalid_argument, "the Sampler was made for " + std::to_string(sampler.n_vocab()) +
                                                       " tokens, the model has " +
                                                       std::to_string(session.model().hparams().n_vocab));
    }
    Step step{};
    const Clock::time_point start = Clock::now();
    session.evaluate(tokens, /*all_logits=*/false, logits, interrupted);
    step.eval_ms = ms_since(start);
    // A NaN reaching the sampler would read as a sampling problem; it is the model's (weights
    // holding NaN or inf, or an overflow in f16).
    for (size_t i = 0; i < logits.size(); ++i) {
        if (std::isnan(logits[i])) {
            throw Error(Error::Kind::evaluation, "the model produced NaN logits (first at token id " + std::to_string(i) +
                                                     ", after " + std::to_string(session.n_past()) +
                                                     " tokens): its weights may hold NaN or inf values");
        }
    }

    const Clock::time_point sampled = Clock::now();
    step.token = sampler.sample(logits.data(), session.history());
    step.logprob = want_logprob ? log_probability(logits.data(), sampler.n_vocab(), step.token)
                                : std::numeric_limits<float>::quiet_NaN();
    if (n_top_logprobs > 0) step.top_logprobs = top_log_probabilities(logits.data(), sampler.n_vocab(), n_top_logprobs);
    step.sample_ms = ms_since(sampled);
    return step;
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
