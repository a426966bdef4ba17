// Verifying a drafted continuation: the step's token and k guessed tokens after it are
// evaluated in one graph (generation is bound by reading the weights, so k + 1 tokens cost
// little more than one), and the guesses are kept as far as the model agrees with them.
//
// The drafts are single guesses (prompt lookup: the tokens that followed the same n-gram
// earlier), a point mass q(x) = 1 on the drafted token. Speculative sampling accepts a draft
// x with probability min(1, p(x) / q(x)) = p(x) and on a rejection draws from the residual
// max(0, p - q) renormalized, which is p without x. Drawing y ~ p and accepting x iff y == x
// has exactly those probabilities (P(y = x) = p(x); given y != x, y ~ p restricted to
// y != x), so each verified position is one ordinary draw from the sampler's own
// distribution: the output is distributed as without speculation, greedy included (the
// argmax accepts the draft iff it is the argmax), and a seeded sampler makes the same draws.
#pragma once

#include <cstdint>
#include <vector>

#include "gptj/batch_evaluator.h"
#include "gptj/generation.h"
#include "gptj/sampling.h"
#include "gptj/session.h"

namespace gptj {

// Appends `tokens` then `draft` to the session, evaluating them together, and samples at the
// last of `tokens` and at each draft position in turn, each with the history up to there,
// while the sampled token equals the draft's next one. Returns one Step per sampled token:
// the accepted drafts, then the first token that differed from the draft (or followed all of
// it). The session is truncated to hold `tokens` and the accepted drafts: the last Step's
// token is not evaluated, as after evaluate_and_sample. The evaluation's time is the first
// Step's eval_ms. An empty draft is evaluate_and_sample. Throws as evaluate_and_sample, and
// Error(invalid_argument) for a draft after more than one token (drafts extend generation
// steps, which evaluate one token).
std::vector<Step> evaluate_and_verify(Session & session, const std::vector<int32_t> & tokens,
                                      const std::vector<int32_t> & draft, Sampler & sampler, bool want_logprob,
                                      std::vector<float> & logits, int32_t n_top_logprobs = 0,
                                      const InterruptCheck & interrupted = nullptr);

// The same for several sessions in one batched evaluation (BatchStepItem::draft; an item
// without a sampler has no draft and gives one Step with token -1; without drafts it is one
// sampled step per item). Errors as BatchEvaluator::evaluate's (checked before anything runs),
// and Error(evaluation) naming the item whose logits hold NaN; after any error every session is
// back where it was.
std::vector<std::vector<Step>> evaluate_and_verify(BatchEvaluator & evaluator, const std::vector<BatchStepItem> & items,
                                                   const InterruptCheck & interrupted = nullptr);

}  // namespace gptj
