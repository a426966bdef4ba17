#include "gptj/step_sampling.h"

#include <cmath>
#include <limits>

#include "gptj/error.h"

namespace gptj {

void check_no_nan(const float * logits, size_t n_vocab, int n_past, const std::string & where) {
    for (size_t i = 0; i < n_vocab; ++i) {
        if (std::isnan(logits[i])) {
            throw Error(Error::Kind::evaluation, where + "the model produced NaN logits (first at token id " +
                                                     std::to_string(i) + ", after " + std::to_string(n_past) +
                                                     " tokens): its weights may hold NaN or inf values");
        }
    }
}

void check_sampler(const Sampler & sampler, const Model & model, const std::string & where) {
    if (sampler.n_vocab() != model.hparams().n_vocab) {
        throw Error(Error::Kind::invalid_argument, where + "the Sampler was made for " + std::to_string(sampler.n_vocab()) +
                                                       " tokens, the model has " +
                                                       std::to_string(model.hparams().n_vocab));
    }
}

void sample_into(Step & step, const float * logits, const std::vector<int32_t> & history, Sampler & sampler,
                 bool want_logprob, int32_t n_top_logprobs) {
    const auto sampled = std::chrono::steady_clock::now();
    step.token = sampler.sample(logits, history);
    step.logprob = want_logprob ? log_probability(logits, sampler.n_vocab(), step.token)
                                : std::numeric_limits<float>::quiet_NaN();
    if (n_top_logprobs > 0) step.top_logprobs = top_log_probabilities(logits, sampler.n_vocab(), n_top_logprobs);
    step.sample_ms = ms_since(sampled);
}

}  // namespace gptj
