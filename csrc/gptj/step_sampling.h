// The part of a generation step after the evaluation: checking the logits, sampling a token
// and scoring it, timed. Shared by the plain step (generation.cpp) and draft verification
// (speculation.cpp), so both report the same things the same way.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "gptj/generation.h"
#include "gptj/model.h"
#include "gptj/sampling.h"

namespace gptj {

// Milliseconds from `start` to now: how every step times its parts.
inline double ms_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// A NaN reaching the sampler would read as a sampling problem; it is the model's (weights
// holding NaN or inf, or an overflow in f16). `where` prefixes the message ("items[2]: ").
void check_no_nan(const float * logits, size_t n_vocab, int n_past, const std::string & where);

// Throws Error(invalid_argument) when the sampler was made for another vocabulary size.
void check_sampler(const Sampler & sampler, const Model & model, const std::string & where);

// Samples step.token from logits (history: the penalties' window) and fills its logprob, top
// log-probabilities and sample_ms.
void sample_into(Step & step, const float * logits, const std::vector<int32_t> & history, Sampler & sampler,
                 bool want_logprob, int32_t n_top_logprobs);

}  // namespace gptj
