// Choosing the next token from logits. Kept apart from evaluation so samplers can grow
// (top-k, top-p, penalties, ...) without touching the model.
#pragma once

#include <cstdint>
#include <random>

namespace gptj {

// The id of the largest logit (the first one on ties, as torch.argmax).
int32_t argmax(const float * logits, int32_t n_vocab);

class Sampler {
public:
    explicit Sampler(uint64_t seed) : rng_(seed) {}

    // temperature <= 0 is greedy; otherwise a draw from softmax(logits / temperature).
    int32_t sample(const float * logits, int32_t n_vocab, float temperature);

private:
    std::mt19937_64 rng_;
};

}  // namespace gptj
