#include "gptj/generation.h"

#include <chrono>
#include <string>

#include "gptj/error.h"
#include "gptj/step_sampling.h"

namespace gptj {
namespace {

using Clock = std::chrono::steady_clock;

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
