#include "gptj/sampling.h"

#include <cmath>
#include <vector>

namespace gptj {

int32_t argmax(const float * logits, int32_t n_vocab) {
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; ++i) {
        if (logits[i] > logits[best]) best = i;
    }
    return best;
}

int32_t Sampler::sample(const float * logits, int32_t n_vocab, float temperature) {
    if (!(temperature > 0.0f)) return argmax(logits, n_vocab);
    const float max_logit = logits[argmax(logits, n_vocab)];
    std::vector<double> weights(static_cast<size_t>(n_vocab));
    for (int32_t i = 0; i < n_vocab; ++i) {
        weights[static_cast<size_t>(i)] = std::exp(static_cast<double>(logits[i] - max_logit) / temperature);
    }
    std::discrete_distribution<int32_t> pick(weights.begin(), weights.end());
    return pick(rng_);
}

}  // namespace gptj
