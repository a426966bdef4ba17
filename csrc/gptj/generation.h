// One step of generation -- evaluate the new tokens, sample the next one -- timed, and the
// whole loop in C++ (the yardstick for the Python generator's overhead).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "gptj/sampling.h"
#include "gptj/session.h"

namespace gptj {

struct Step {
    int32_t token;
    float logprob;     // the model's log-probability of token (NaN unless asked for)
    double eval_ms;    // evaluating the tokens
    double sample_ms;  // sampling (and the log-probabilities)
    std::vector<std::pair<int32_t, float>> top_logprobs;  // the most likely tokens, when asked for
};

// Appends tokens to the session (evaluating them) and samples the token that follows, with
// the session's history as the penalties' window. logits is scratch space, reused per call.
// Throws Error(invalid_argument) for no tokens (there would be no logits to sample from) and
// Error(evaluation) when the model produced NaN logits.
Step evaluate_and_sample(Session & session, const std::vector<int32_t> & tokens, Sampler & sampler,
                         bool want_logprob, std::vector<float> & logits, int32_t n_top_logprobs = 0,
                         const InterruptCheck & interrupted = nullptr);

// One session's part of a batched step (evaluate_and_verify in speculation.h): its new tokens,
// the guessed tokens after them, and its sampler (null: evaluate only, as for a prompt chunk
// before the prompt's end; its Step then has token -1).
struct BatchStepItem {
    Session * session;
    std::vector<int32_t> tokens;
    Sampler * sampler;
    bool want_logprob;
    int32_t n_top_logprobs;
    std::vector<int32_t> draft = {};
};

struct LoopResult {
    std::vector<int32_t> tokens;  // n_tokens sampled tokens (the last one is not evaluated)
    double prompt_ms;             // evaluating the prompt and sampling the first token
    double generation_ms;         // the rest: one evaluation and one sample per token
};

// The plain generation loop: no stop strings, no end-of-text, no text. Throws
// Error(context_full) if n_tokens do not fit.
LoopResult generate_loop(Session & session, const std::vector<int32_t> & prompt, int n_tokens, Sampler & sampler,
                         const InterruptCheck & interrupted = nullptr);

}  // namespace gptj
