// The sampler's numeric settings, defined once. Everything else is made from this list: the
// fields of gptj::SamplingParams and their range checks (sampling.h/.cpp), the Python
// SamplingParams class and the keyword arguments of Session.generate (through the bindings'
// sampling_settings()), the CLI's flags and the HTTP server's request fields.
//
// Adding a setting: a row here, the step that uses it in sampling.h/.cpp, and a test.
//
// Each row: X(type, name, default, low, high, bounds, help)
//   bounds says which ends of [low, high] are allowed, as in the error message: "[]", "[)",
//   "(]" or "()"; an infinite end is never allowed, so "()" with both ends infinite means
//   "any finite number".
//   A setting's neutral value turns its step off; the defaults are those of current llama.cpp
//   (repeat_penalty off, as in the OpenAI API, so that temperature 0 is plain greedy decoding).
#pragma once

#include <limits>

namespace gptj::sampling_bounds {
constexpr double inf = std::numeric_limits<double>::infinity();
}  // namespace gptj::sampling_bounds

#define GPTJ_SAMPLING_SETTINGS(X)                                                                                   \
    X(float, temperature, 0.8, 0, inf, "[)",                                                                      \
      "divides the logits before the draw; 0 is greedy (always the most likely token)")                           \
    X(float, top_n_sigma, 0.0, 0, inf, "[)",                                                                      \
      "top-n-sigma (Tang et al. 2024): keep tokens whose logit is within top_n_sigma standard deviations of "     \
      "the largest; 0: off")                                                                                      \
    X(int32_t, top_k, 40, 0, inf, "[)", "keep only the top_k most likely tokens; 0: off")                         \
    X(float, top_p, 0.95, 0, 1, "(]",                                                                             \
      "nucleus sampling: keep the most likely tokens whose probabilities add up to top_p; 1: off")                \
    X(float, min_p, 0.05, 0, 1, "[]", "keep tokens at least min_p times as likely as the most likely one; 0: off") \
    X(float, typical_p, 1.0, 0, 1, "(]",                                                                          \
      "locally typical sampling: keep the tokens whose surprise is closest to the entropy, up to typical_p "      \
      "of the probability; 1: off")                                                                               \
    X(float, repeat_penalty, 1.0, 0, inf, "()",                                                                   \
      "divide the logits of tokens among the last repeat_last_n by this (multiply negative ones); 1: off")        \
    X(int32_t, repeat_last_n, 64, -1, inf, "[)",                                                                  \
      "how many of the latest tokens (prompt included) the penalties look at; 0: off, -1: the whole context")     \
    X(float, presence_penalty, 0.0, -inf, inf, "()",                                                              \
      "subtracted once from the logit of every token among the latest repeat_last_n; 0: off")                     \
    X(float, frequency_penalty, 0.0, -inf, inf, "()",                                                             \
      "subtracted from a token's logit for each time it occurs among the latest repeat_last_n; 0: off")
