// Choosing the next token from logits, as a chain of small steps over a candidate list:
// repetition penalties, logit bias, top-k, typical, top-p, min-p, temperature, then a draw
// (or the argmax, at temperature 0). Kept apart from evaluation: a sampler only ever sees
// logits and the tokens that came before them.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gptj/sampling_settings.h"

namespace gptj {

// The id of the largest logit (the first one on ties, as torch.argmax).
int32_t argmax(const float * logits, int32_t n_vocab);

// log softmax(logits)[id]: the model's own log-probability of a token, before any sampler.
float log_probability(const float * logits, int32_t n_vocab, int32_t id);

// The n most likely tokens under the model (log softmax of the raw logits), most likely first
// (equal logits by id): the alternatives OpenAI's top_logprobs reports.
std::vector<std::pair<int32_t, float>> top_log_probabilities(const float * logits, int32_t n_vocab, int32_t n);

// The sampler's settings: the numeric ones come from GPTJ_SAMPLING_SETTINGS (their defaults
// included); a step's neutral value disables it (top_k 0, top_p 1, min_p 0, typical_p 1,
// penalties 1/0).
struct SamplingParams {
#define GPTJ_SAMPLING_FIELD(type, name, default_value, low, high, bounds, help) \
    type name = static_cast<type>(default_value);
    GPTJ_SAMPLING_SETTINGS(GPTJ_SAMPLING_FIELD)
#undef GPTJ_SAMPLING_FIELD
    std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logits of these ids
    uint64_t seed = 0;
};

// One row of GPTJ_SAMPLING_SETTINGS, as data: what the bindings hand to Python.
struct SamplingSetting {
    const char * name;
    bool is_integer;  // int32_t; otherwise float
    double default_value;
    double low, high;
    bool low_inclusive, high_inclusive;
    const char * help;
};

// Every numeric setting, in the order of GPTJ_SAMPLING_SETTINGS.
const std::vector<SamplingSetting> & sampling_settings();

// Throws Error(invalid_argument) naming the setting when value is outside its range (NaN
// included); values are checked as doubles, before any narrowing to the field's type.
void check_sampling_setting(const SamplingSetting & setting, double value);

// Sets the named setting; throws Error(invalid_argument) for an unknown name or a value out
// of range (an integer setting also rejects a value with a fractional part).
void set_sampling_setting(SamplingParams & params, const std::string & name, double value);

struct Candidate {
    int32_t id;
    float logit;
    double p;  // filled by softmax()
};

// The tokens still in the running. Built from the whole vocabulary in id order; a step that
// needs them by probability sorts them (and says so in `sorted`).
struct Candidates {
    std::vector<Candidate> items;
    bool sorted = false;  // by logit, descending
};

// The steps, in the order Sampler applies them. Each keeps at least one candidate.
void fill_candidates(Candidates & c, const float * logits, int32_t n_vocab);
// Needs the candidates in id order, the whole vocabulary (the first step).
void penalize_repetition(Candidates & c, const std::vector<int32_t> & history, const SamplingParams & params);
void add_logit_bias(Candidates & c, const std::vector<std::pair<int32_t, float>> & bias);
// Keeps the tokens whose logit is at least max - n_sigma * (standard deviation of the finite
// logits): a cut that does not move with the temperature.
void keep_top_n_sigma(Candidates & c, float n_sigma);
void keep_top_k(Candidates & c, int32_t k);
void keep_typical(Candidates & c, float typical_p);
void keep_top_p(Candidates & c, float top_p);
void keep_min_p(Candidates & c, float min_p);
void apply_temperature(Candidates & c, float temperature);
// Sorts by logit and sets p = softmax(logits) over the candidates.
void softmax(Candidates & c);
// The candidate whose cumulative probability first exceeds u * total (u in [0, 1)).
int32_t draw(const Candidates & c, double u);

class Sampler {
public:
    // Throws Error(invalid_argument) for a value out of range or a logit_bias id >= n_vocab.
    Sampler(SamplingParams params, int32_t n_vocab);

    // The next token: history is every token before these logits (for the penalties).
    int32_t sample(const float * logits, const std::vector<int32_t> & history);

    // The distribution sample() draws from, per id (0 for filtered-out tokens; one-hot at
    // temperature 0). Does not advance the random state.
    std::vector<double> distribution(const float * logits, const std::vector<int32_t> & history);

    const SamplingParams & params() const { return params_; }
    int32_t n_vocab() const { return n_vocab_; }

private:
    // Everything but the draw: candidates with p set.
    void run_chain(const float * logits, const std::vector<int32_t> & history);
    // A uniform double in [0, 1) from 53 random bits: the same on every platform, unlike
    // std::uniform_real_distribution or std::discrete_distribution.
    double uniform();

    SamplingParams params_;
    int32_t n_vocab_;
    std::mt19937_64 rng_;
    Candidates candidates_;  // reused: no allocation per token
};

}  // namespace gptj
