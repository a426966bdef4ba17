#include "gptj/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "gptj/error.h"

namespace gptj {
namespace {

// Descending logit, then ascending id: a total order, so equal logits sort the same everywhere.
bool more_likely(const Candidate & a, const Candidate & b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

void check(bool ok, const std::string & message) {
    if (!ok) throw Error(Error::Kind::invalid_argument, message);
}

// Shortest form that reads back the same (0.95, not 0.950000).
std::string number(double value) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.9g", value);
    return text;
}

}  // namespace

const std::vector<SamplingSetting> & sampling_settings() {
    using sampling_bounds::inf;
    static const std::vector<SamplingSetting> settings = {
#define GPTJ_SETTING_ROW(type, name, default_value, low, high, bounds, help)                                   \
    SamplingSetting{#name, std::is_integral_v<type>, default_value, low, high, (bounds)[0] == '[', (bounds)[1] == ']', \
                    help},
        GPTJ_SAMPLING_SETTINGS(GPTJ_SETTING_ROW)
#undef GPTJ_SETTING_ROW
    };
    return settings;
}

void check_sampling_setting(const SamplingSetting & s, double value) {
    const bool above_low = s.low_inclusive ? value >= s.low : value > s.low;
    const bool below_high = s.high_inclusive ? value <= s.high : value < s.high;
    if (above_low && below_high && std::isfinite(value)) return;  // NaN fails both comparisons
    std::string range;
    if (std::isinf(s.low) && std::isinf(s.high)) {
        range = "a finite number";
    } else if (std::isinf(s.high)) {
        range = (s.low_inclusive ? ">= " : "> ") + number(s.low);
    } else {
        range = std::string("in ") + (s.low_inclusive ? "[" : "(") + number(s.low) + ", " + number(s.high) +
                (s.high_inclusive ? "]" : ")");
    }
    throw Error(Error::Kind::invalid_argument, std::string(s.name) + " must be " + range + ", got " + number(value));
}

void set_sampling_setting(SamplingParams & params, const std::string & name, double value) {
    for (const SamplingSetting & setting : sampling_settings()) {
        if (name != setting.name) continue;
        check_sampling_setting(setting, value);
        if (setting.is_integer) {
            check(value == std::floor(value), name + " must be an integer, got " + number(value));
            check(std::fabs(value) <= std::numeric_limits<int32_t>::max(), name + " is too large, got " + number(value));
        } else {
            check(std::fabs(value) <= std::numeric_limits<float>::max(), name + " is too large, got " + number(value));
        }
#define GPTJ_SET_FIELD(type, field, default_value, low, high, bounds, help) \
    if (name == #field) params.field = static_cast<type>(value);
        GPTJ_SAMPLING_SETTINGS(GPTJ_SET_FIELD)
#undef GPTJ_SET_FIELD
        return;
    }
    throw Error(Error::Kind::invalid_argument, "unknown sampling setting '" + name + "'");
}

int32_t argmax(const float * logits, int32_t n_vocab) {
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; ++i) {
        if (logits[i] > logits[best]) best = i;
    }
    return best;
}

float log_probability(const float * logits, int32_t n_vocab, int32_t id) {
    const double max_logit = logits[argmax(logits, n_vocab)];
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
    return static_cast<float>(static_cast<double>(logits[id]) - max_logit - std::log(sum));
}

std::vector<std::pair<int32_t, float>> top_log_probabilities(const float * logits, int32_t n_vocab, int32_t n) {
    n = std::max(0, std::min(n, n_vocab));
    std::vector<int32_t> ids(static_cast<size_t>(n_vocab));
    for (int32_t i = 0; i < n_vocab; ++i) ids[static_cast<size_t>(i)] = i;
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                      [logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    double sum = 0.0;
    const double max_logit = n > 0 ? logits[ids[0]] : 0.0;
    if (n > 0) {
        for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
    }
    std::vector<std::pair<int32_t, float>> out;
    out.reserve(static_cast<size_t>(n));
    for (int32_t k = 0; k < n; ++k) {
        const int32_t id = ids[static_cast<size_t>(k)];
        out.emplace_back(id, static_cast<float>(static_cast<double>(logits[id]) - max_logit - std::log(sum)));
    }
    return out;
}

void fill_candidates(Candidates & c, const float * logits, int32_t n_vocab) {
    c.items.resize(static_cast<size_t>(n_vocab));
    for (int32_t i = 0; i < n_vocab; ++i) c.items[static_cast<size_t>(i)] = Candidate{i, logits[i], 0.0};
    c.sorted = false;
}

void penalize_repetition(Candidates & c, const std::vector<int32_t> & history, const SamplingParams & params) {
    const bool neutral = params.repeat_penalty == 1.0f && params.presence_penalty == 0.0f && params.frequency_penalty == 0.0f;
    if (neutral || params.repeat_last_n == 0 || history.empty()) return;
    const size_t window = params.repeat_last_n < 0 ? history.size()
                                                    : std::min(history.size(), static_cast<size_t>(params.repeat_last_n));
    std::unordered_map<int32_t, int> counts;
    for (auto it = history.end() - static_cast<std::ptrdiff_t>(window); it != history.end(); ++it) {
        // The ids index the candidates: one from another vocabulary would write out of bounds.
        if (*it < 0 || static_cast<size_t>(*it) >= c.items.size()) {
            check(false, "history token id " + std::to_string(*it) + " is out of range [0, " +
                             std::to_string(c.items.size()) + ")");
        }
        ++counts[*it];
    }
    for (const auto & [id, count] : counts) {
        float & logit = c.items[static_cast<size_t>(id)].logit;  // id order: index == id
        // As llama.cpp and transformers: dividing a negative logit would make it more likely.
        logit = logit <= 0.0f ? logit * params.repeat_penalty : logit / params.repeat_penalty;
        logit -= static_cast<float>(count) * params.frequency_penalty + params.presence_penalty;
    }
}

void add_logit_bias(Candidates & c, const std::vector<std::pair<int32_t, float>> & bias) {
    for (const auto & [id, value] : bias) c.items[static_cast<size_t>(id)].logit += value;
}

void keep_top_n_sigma(Candidates & c, float n_sigma) {
    if (n_sigma <= 0.0f) return;
    double max_logit = -std::numeric_limits<double>::infinity(), sum = 0.0, sum_squares = 0.0;
    size_t n_finite = 0;
    for (const Candidate & item : c.items) {
        if (!std::isfinite(item.logit)) continue;  // banned tokens (-inf) are no part of the spread
        max_logit = std::max(max_logit, static_cast<double>(item.logit));
        sum += item.logit;
        sum_squares += static_cast<double>(item.logit) * item.logit;
        ++n_finite;
    }
    if (n_finite == 0) return;
    const double mean = sum / static_cast<double>(n_finite);
    const double sigma = std::sqrt(std::max(0.0, sum_squares / static_cast<double>(n_finite) - mean * mean));
    const double threshold = max_logit - static_cast<double>(n_sigma) * sigma;
    // Order is kept (the most likely token always passes), so `sorted` stays as it was.
    c.items.erase(std::remove_if(c.items.begin(), c.items.end(),
                                 [threshold](const Candidate & item) { return item.logit < threshold; }),
                  c.items.end());
}

void keep_top_k(Candidates & c, int32_t k) {
    if (k <= 0 || static_cast<size_t>(k) >= c.items.size()) return;
    std::partial_sort(c.items.begin(), c.items.begin() + k, c.items.end(), more_likely);
    c.items.resize(static_cast<size_t>(k));
    c.sorted = true;
}

void softmax(Candidates & c) {
    if (!c.sorted) {
        std::sort(c.items.begin(), c.items.end(), more_likely);
        c.sorted = true;
    }
    const double max_logit = c.items.front().logit;
    check(max_logit > -std::numeric_limits<double>::infinity(), "every token has a logit of -inf (check logit_bias)");
    double sum = 0.0;
    for (Candidate & item : c.items) {
        item.p = std::exp(static_cast<double>(item.logit) - max_logit);
        sum += item.p;
    }
    for (Candidate & item : c.items) item.p /= sum;
}

void keep_typical(Candidates & c, float typical_p) {
    if (typical_p >= 1.0f) return;
    softmax(c);
    double entropy = 0.0;
    for (const Candidate & item : c.items) {
        if (item.p > 0.0) entropy -= item.p * std::log(item.p);
    }
    // Most typical first: tokens whose information content is closest to the entropy.
    std::vector<std::pair<double, size_t>> order(c.items.size());
    for (size_t i = 0; i < c.items.size(); ++i) {
        const double surprise = c.items[i].p > 0.0 ? -std::log(c.items[i].p) : std::numeric_limits<double>::infinity();
        order[i] = {std::abs(surprise - entropy), i};
    }
    std::stable_sort(order.begin(), order.end(), [](const auto & a, const auto & b) { return a.first < b.first; });
    std::vector<Candidate> kept;
    double cumulative = 0.0;
    for (const auto & [shift, index] : order) {
        kept.push_back(c.items[index]);
        cumulative += c.items[index].p;
        if (cumulative >= typical_p) break;
    }
    c.items = std::move(kept);
    c.sorted = false;
}

void keep_top_p(Candidates & c, float top_p) {
    if (top_p >= 1.0f) return;
    softmax(c);
    double cumulative = 0.0;
    size_t n = 0;
    while (n < c.items.size()) {
        cumulative += c.items[n++].p;
        if (cumulative >= top_p) break;
    }
    c.items.resize(n);
}

void keep_min_p(Candidates & c, float min_p) {
    if (min_p <= 0.0f) return;
    softmax(c);
    const double threshold = static_cast<double>(min_p) * c.items.front().p;
    size_t n = 1;
    while (n < c.items.size() && c.items[n].p >= threshold) ++n;
    c.items.resize(n);
}

void apply_temperature(Candidates & c, float temperature) {
    double max_logit = -std::numeric_limits<double>::infinity(), max_magnitude = 0.0;
    for (const Candidate & item : c.items) {
        if (!std::isfinite(item.logit)) continue;
        max_logit = std::max(max_logit, static_cast<double>(item.logit));
        max_magnitude = std::max(max_magnitude, std::fabs(static_cast<double>(item.logit)));
    }
    // A tiny temperature would turn large logits into inf, and softmax's inf - inf into NaN:
    // then shift by the largest logit first (the distribution is the same). Not always, since
    // the shift rounds every logit once more.
    const float shift = max_magnitude / temperature > std::numeric_limits<float>::max() ? static_cast<float>(max_logit) : 0.0f;
    for (Candidate & item : c.items) item.logit = (item.logit - shift) / temperature;
}

int32_t draw(const Candidates & c, double u) {
    double total = 0.0;
    for (const Candidate & item : c.items) total += item.p;
    const double target = u * total;
    double cumulative = 0.0;
    for (const Candidate & item : c.items) {
        cumulative += item.p;
        if (cumulative > target) return item.id;
    }
    // Rounding left u * total at the very end: the last candidate that has any probability.
    for (auto it = c.items.rbegin(); it != c.items.rend(); ++it) {
        if (it->p > 0.0) return it->id;
    }
    return c.items.front().id;
}

Sampler::Sampler(SamplingParams params, int32_t n_vocab) : params_(std::move(params)), n_vocab_(n_vocab), rng_(params_.seed) {
    check(n_vocab > 0, "a sampler needs a vocabulary of at least one token, got n_vocab = " + std::to_string(n_vocab));
    const SamplingParams & p = params_;
    const std::vector<SamplingSetting> & settings = sampling_settings();
    size_t i = 0;
#define GPTJ_CHECK_FIELD(type, name, default_value, low, high, bounds, help) \
    check_sampling_setting(settings[i++], static_cast<double>(p.name));
    GPTJ_SAMPLING_SETTINGS(GPTJ_CHECK_FIELD)
#undef GPTJ_CHECK_FIELD
    for (const auto & [id, value] : p.logit_bias) {
        check(id >= 0 && id < n_vocab, "logit_bias token id " + std::to_string(id) + " is out of range [0, " + std::to_string(n_vocab) + ")");
        check(!std::isnan(value) && value != std::numeric_limits<float>::infinity(),
              "logit_bias of token " + std::to_string(id) + " must be a number or -inf");
    }
}

void Sampler::run_chain(const float * logits, const std::vector<int32_t> & history) {
    Candidates & c = candidates_;
    // NaN has no order: std::sort over it is undefined behaviour (it may read out of bounds).
    // The messages are built only on failure: built for every token, they cost more than the
    // sampling (two formatted numbers per vocabulary entry, about 20 ms per token).
    for (int32_t i = 0; i < n_vocab_; ++i) {
        if (std::isnan(logits[i]) || logits[i] == std::numeric_limits<float>::infinity()) {
            check(false, "the logits must be numbers or -inf; token " + std::to_string(i) + "'s is " + number(logits[i]));
        }
    }
    fill_candidates(c, logits, n_vocab_);
    penalize_repetition(c, history, params_);
    add_logit_bias(c, params_.logit_bias);
    // A tiny repeat_penalty can overflow a logit to +inf, and a -inf bias on it gives NaN.
    for (const Candidate & item : c.items) {
        if (std::isnan(item.logit) || item.logit == std::numeric_limits<float>::infinity()) {
            check(false, "token " + std::to_string(item.id) + "'s logit is " + number(item.logit) +
                             " after the repetition penalties and logit_bias (is repeat_penalty too small?)");
        }
    }
    if (params_.temperature <= 0.0f) {
        // Greedy picks the largest logit; with every one -inf (banned by logit_bias) there is none.
        const bool any = std::any_of(c.items.begin(), c.items.end(), [](const Candidate & item) {
            return item.logit > -std::numeric_limits<float>::infinity();
        });
        check(any, "every token has a logit of -inf (check logit_bias)");
        return;
    }
    keep_top_n_sigma(c, params_.top_n_sigma);
    keep_top_k(c, params_.top_k);
    keep_typical(c, params_.typical_p);
    keep_top_p(c, params_.top_p);
    keep_min_p(c, params_.min_p);
    apply_temperature(c, params_.temperature);
    softmax(c);
}

int32_t Sampler::sample(const float * logits, const std::vector<int32_t> & history) {
    run_chain(logits, history);
    if (params_.temperature <= 0.0f) {
        const auto best = std::max_element(candidates_.items.begin(), candidates_.items.end(),
                                           [](const Candidate & a, const Candidate & b) { return a.logit < b.logit; });
        return best->id;
    }
    return draw(candidates_, uniform());
}

std::vector<double> Sampler::distribution(const float * logits, const std::vector<int32_t> & history) {
    run_chain(logits, history);
    std::vector<double> out(static_cast<size_t>(n_vocab_), 0.0);
    if (params_.temperature <= 0.0f) {
        const auto best = std::max_element(candidates_.items.begin(), candidates_.items.end(),
                                           [](const Candidate & a, const Candidate & b) { return a.logit < b.logit; });
        out[static_cast<size_t>(best->id)] = 1.0;
        return out;
    }
    double total = 0.0;
    for (const Candidate & item : candidates_.items) total += item.p;
    for (const Candidate & item : candidates_.items) out[static_cast<size_t>(item.id)] = item.p / total;
    return out;
}

double Sampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

}  // namespace gptj
