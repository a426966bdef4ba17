#include "gptj/generation.h"

#include <chrono>
#include <cmath>
#include <limits>

namespace gptj {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

Step evaluate_and_sample(Session & session, const std::vector<int32_t> & tokens, Sampler & sampler,
                         bool want_logprob, std::vector<float> & logits, int32_t n_top_logprobs) {
    Step step{};
    const Clock::time_point start = Clock::now();
    session.evaluate(tokens, /*all_logits=*/false, logits);
    step.eval_ms = ms_since(start);

    const Clock::time_point sampled = Clock::now();
    step.token = sampler.sample(logits.data(), session.history());
    step.logprob = want_logprob ? log_probability(logits.data(), sampler.n_vocab(), step.token)
                                : std::numeric_limits<float>::quiet_NaN();
    if (n_top_logprobs > 0) step.top_logprobs = top_log_probabilities(logits.data(), sampler.n_vocab(), n_top_logprobs);
    step.sample_ms = ms_since(sampled);
    return step;
}

LoopResult generate_loop(Session & session, const std::vector<int32_t> & prompt, int n_tokens, Sampler & sampler) {
    LoopResult result{};
    std::vector<float> logits;
    std::vector<int32_t> pending = prompt;
    Clock::time_point start = Clock::now();
    for (int i = 0; i < n_tokens; ++i) {
        const Step step = evaluate_and_sample(session, pending, sampler, false, logits);
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
