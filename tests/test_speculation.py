"""Prompt lookup speculative decoding: the same tokens, the same distribution, a consistent cache.

Identity needs no trained model: whatever the drafts, each verified position is an ordinary draw
from the sampler, so greedy output and seeded samples must equal the plain loop's token for
token. ``PromptLookup(adaptive=False)`` drafts whenever the text has a match, so the verifying
path runs at every step a repetition allows (a tiny random model loops quickly, so it does).
The distribution test checks the acceptance rule itself, at the engine, against
``Sampler.distribution``.
"""

from __future__ import annotations

import numpy as np
import pytest

from gptj_ggml import ContextFullError, Model, PromptLookup, SamplingParams
from gptj_ggml._native import core

GREEDY = {"temperature": 0.0, "ignore_eos": True}
ALWAYS = PromptLookup(max_draft=8, adaptive=False)
PROMPTS = [
    "The cat sat on the mat. The cat sat on the mat. The cat sat on",
    "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return",
    "one two three four one two three four one two",
    "Hello",
]


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f32"), n_ctx=160, n_threads=1)


def complete(model, prompt, **options):
    return model.session().complete(prompt, **options)


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("lookup", [ALWAYS, 4, PromptLookup(max_draft=15, min_ngram=2, max_ngram=4, adaptive=False)])
def test_greedy_output_is_token_for_token_the_plain_greedy_output(model, prompt, lookup):
    plain = complete(model, prompt, max_tokens=48, **GREEDY)

    fast = complete(model, prompt, max_tokens=48, lookup=lookup, **GREEDY)

    assert fast.tokens == plain.tokens and fast.text == plain.text
    assert fast.finish_reason == plain.finish_reason == "length"


def test_the_drafts_are_verified_and_many_accepted_where_the_text_repeats(model):
    plain = complete(model, PROMPTS[0], max_tokens=48, **GREEDY)

    fast = complete(model, PROMPTS[0], max_tokens=48, lookup=ALWAYS, **GREEDY)

    timings = fast.timings
    assert timings.drafted_tokens > 0 and 0 < timings.accepted_tokens <= timings.drafted_tokens
    assert fast.tokens == plain.tokens
    assert plain.timings.drafted_tokens == plain.timings.accepted_tokens == 0
    assert "drafted tokens accepted" in str(timings)


@pytest.mark.parametrize(
    "sampling",
    [
        {},
        {"temperature": 1.3, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
        {
            "temperature": 0.9,
            "repeat_penalty": 1.3,
            "repeat_last_n": 16,
            "presence_penalty": 0.4,
            "frequency_penalty": 0.3,
        },
        {"temperature": 0.7, "typical_p": 0.9, "top_n_sigma": 2.0},
    ],
)
@pytest.mark.parametrize("seed", [3, 11])
def test_a_seed_gives_the_same_samples_with_and_without_drafts(model, sampling, seed):
    plain = complete(model, PROMPTS[2], max_tokens=40, seed=seed, ignore_eos=True, **sampling)

    fast = complete(model, PROMPTS[2], max_tokens=40, seed=seed, ignore_eos=True, lookup=ALWAYS, **sampling)

    assert fast.tokens == plain.tokens


def test_log_probabilities_of_verified_tokens_are_the_plain_steps(model):
    plain = complete(model, PROMPTS[0], max_tokens=30, top_logprobs=3, **GREEDY)

    fast = complete(model, PROMPTS[0], max_tokens=30, top_logprobs=3, lookup=ALWAYS, **GREEDY)

    assert fast.tokens == plain.tokens
    np.testing.assert_allclose(fast.logprobs, plain.logprobs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 7])
def test_max_tokens_is_never_exceeded_by_accepted_drafts(model, max_tokens):
    plain = complete(model, PROMPTS[0], max_tokens=max_tokens, **GREEDY)

    fast = complete(model, PROMPTS[0], max_tokens=max_tokens, lookup=ALWAYS, **GREEDY)

    assert fast.tokens == plain.tokens and len(fast.tokens) == max_tokens


def test_a_stop_string_inside_accepted_drafts_ends_there_and_the_cache_is_cut_back(model):
    plain_session, fast_session = model.session(), model.session()
    reference = plain_session.complete(PROMPTS[0], max_tokens=40, **GREEDY).text
    stop = reference[12:16]  # text some later step produces, as the stop
    assert stop

    plain = plain_session.complete(PROMPTS[0], max_tokens=40, stop=stop, **GREEDY)
    fast = fast_session.complete(PROMPTS[0], max_tokens=40, stop=stop, lookup=ALWAYS, **GREEDY)

    assert (fast.text, fast.tokens, fast.finish_reason) == (plain.text, plain.tokens, "stop")
    # The tokens drafted past the stop are not in the cache: the next turn reads what the plain one would.
    assert fast_session.history == plain_session.history


def test_the_cache_holds_what_the_plain_loop_leaves(model):
    plain_session, fast_session = model.session(), model.session()
    plain_session.complete(PROMPTS[1], max_tokens=33, **GREEDY)
    fast_session.complete(PROMPTS[1], max_tokens=33, lookup=ALWAYS, **GREEDY)

    assert fast_session.history == plain_session.history
    # ... and the cached keys and values are the same: the next logits agree.
    probe = [model.tokenize(" and")[0]]
    np.testing.assert_allclose(
        fast_session._core.evaluate(probe), plain_session._core.evaluate(probe), rtol=1e-4, atol=1e-4
    )


def test_a_session_continues_after_a_speculative_generation(model):
    session = model.session()
    first = session.complete(PROMPTS[0], max_tokens=10, lookup=ALWAYS, **GREEDY)
    second = session.complete(PROMPTS[0] + first.text + " and", max_tokens=10, lookup=ALWAYS, **GREEDY)

    fresh = complete(model, PROMPTS[0] + first.text + " and", max_tokens=10, **GREEDY)

    assert second.tokens == fresh.tokens
    assert second.timings.reused_tokens > 0


@pytest.mark.parametrize("policy", ["stop", "shift"])
def test_a_full_context_ends_or_shifts_as_without_drafts(tiny_model_path, policy):
    model = Model(tiny_model_path("f32"), n_ctx=48, n_threads=1)
    options = {"max_tokens": 80, "on_context_full": policy, "n_keep": 4, **GREEDY}

    plain = model.session().complete(PROMPTS[2], **options)
    fast = model.session().complete(PROMPTS[2], lookup=ALWAYS, **options)

    assert fast.tokens == plain.tokens and fast.finish_reason == plain.finish_reason


def test_a_full_context_raises_as_without_drafts(tiny_model_path):
    model = Model(tiny_model_path("f32"), n_ctx=40, n_threads=1)
    got = []
    with pytest.raises(ContextFullError):
        for token in model.session().generate(PROMPTS[2], max_tokens=80, lookup=ALWAYS, **GREEDY):
            got.append(token.id)
    plain = []
    with pytest.raises(ContextFullError):
        for token in model.session().generate(PROMPTS[2], max_tokens=80, **GREEDY):
            plain.append(token.id)
    assert got == plain


def test_end_of_text_inside_accepted_drafts_ends_the_generation(model):
    # Greedy without ignore_eos: the ends agree wherever the plain loop ends.
    for prompt in PROMPTS:
        plain = complete(model, prompt, max_tokens=40, temperature=0)
        fast = complete(model, prompt, max_tokens=40, temperature=0, lookup=ALWAYS)
        assert (fast.tokens, fast.finish_reason) == (plain.tokens, plain.finish_reason)


def test_batched_completions_with_lookup_are_each_the_plain_completion(model):
    prompts = PROMPTS[:3]
    plain = model.complete_batch(prompts, max_tokens=30, **GREEDY)
    fast = model.complete_batch(prompts, max_tokens=30, lookup=ALWAYS, **GREEDY)
    seeded = model.complete_batch(prompts, n=2, max_tokens=24, seed=9, ignore_eos=True, lookup=ALWAYS)

    assert [r.tokens for r in fast] == [r.tokens for r in plain]
    assert sum(r.timings.accepted_tokens for r in fast) > 0
    for i, result in enumerate(seeded):
        alone = complete(model, prompts[i // 2], max_tokens=24, seed=9 + i, ignore_eos=True)
        assert result.tokens == alone.tokens


# -- the engine's verification ------------------------------------------------------------


def new_session(model, n_ctx=160):
    return core.Session(model._model, n_ctx=n_ctx, n_threads=1)


def plain_greedy(model, prompt, n_tokens, greedy):
    """The next n_tokens of the plain one-token-per-step greedy loop."""
    session, out, pending = new_session(model), [], prompt
    for _ in range(n_tokens):
        out.append(session.evaluate_and_sample(pending, greedy)[0])
        pending = [out[-1]]
    return out


def test_verification_keeps_the_agreeing_prefix_and_one_more_token(model):
    prompt = model.tokenize(PROMPTS[0])
    greedy = SamplingParams(temperature=0).sampler(model.n_vocab, 0)
    expected = plain_greedy(model, prompt, 6, greedy)

    session = new_session(model)
    session.evaluate(prompt[:-1])
    # Drafts: the true continuation's first three tokens, then a wrong one.
    wrong = (expected[3] + 1) % model.n_vocab
    steps = session.evaluate_and_verify([prompt[-1]], [*expected[:3], wrong, expected[4]], greedy)

    assert [step[0] for step in steps] == expected[:4]
    assert session.history == [*prompt, *expected[:3]]  # the wrong draft and what followed it are gone
    assert steps[0][2] > 0 and all(step[2] == 0 for step in steps[1:])  # the one evaluation, timed once


def test_a_fully_accepted_draft_gives_a_token_after_it(model):
    prompt = model.tokenize(PROMPTS[1])
    greedy = SamplingParams(temperature=0).sampler(model.n_vocab, 0)
    expected = plain_greedy(model, prompt, 4, greedy)

    session = new_session(model)
    session.evaluate(prompt[:-1])
    steps = session.evaluate_and_verify([prompt[-1]], expected[:3], greedy)

    assert [step[0] for step in steps] == expected
    assert session.history == [*prompt, *expected[:3]]


def _chi_square(counts: np.ndarray, p: np.ndarray) -> float:
    expected = counts.sum() * p
    return float(((counts - expected) ** 2 / expected).sum())


def test_verified_tokens_are_distributed_as_the_sampler_draws(model):
    """The speculative-sampling rule: over many draws, the first token follows the sampler's
    distribution whatever the draft; the draft is accepted with its probability; after an accepted
    draft the next token follows the distribution at that position."""
    params = SamplingParams(temperature=2.0, top_k=4, top_p=1.0, min_p=0.0)
    prompt = model.tokenize("The weather today is")
    session = new_session(model)
    logits = session.evaluate(prompt, True)
    p_first = params.sampler(model.n_vocab, 0).distribution(logits[-1], prompt)
    support = np.flatnonzero(p_first)
    assert len(support) == 4
    # Draft the second most likely token: both acceptance and rejection happen often.
    draft = int(support[np.argsort(p_first[support])[-2]])
    after_draft = session.evaluate([draft], False)
    p_second = params.sampler(model.n_vocab, 0).distribution(after_draft, [*prompt, draft])
    second_support = np.flatnonzero(p_second)

    sampler = params.sampler(model.n_vocab, 1234)
    n = 3000
    first_counts = np.zeros(model.n_vocab)
    second_counts = np.zeros(model.n_vocab)
    for _ in range(n):
        session.truncate(len(prompt) - 1)
        steps = session.evaluate_and_verify([prompt[-1]], [draft, 0], sampler)
        first_counts[steps[0][0]] += 1
        assert (steps[0][0] == draft) == (len(steps) >= 2)
        if len(steps) >= 2:
            second_counts[steps[1][0]] += 1

    assert first_counts[np.setdiff1d(np.arange(model.n_vocab), support)].sum() == 0
    # 3 degrees of freedom: 16.3 is the 0.999 quantile of chi-square.
    assert _chi_square(first_counts[support], p_first[support]) < 16.3
    accepted = first_counts[draft]
    assert abs(accepted / n - p_first[draft]) < 4 * np.sqrt(p_first[draft] * (1 - p_first[draft]) / n)
    assert second_counts[np.setdiff1d(np.arange(model.n_vocab), second_support)].sum() == 0
    assert _chi_square(second_counts[second_support], p_second[second_support]) < 16.3


def test_the_engine_refuses_bad_drafts_with_the_session_unchanged(model):
    session = new_session(model)
    sampler = SamplingParams(temperature=0).sampler(model.n_vocab, 0)
    session.evaluate([1, 2, 3])

    with pytest.raises(ValueError, match="exactly one token"):
        session.evaluate_and_verify([4, 5], [6], sampler)
    with pytest.raises(ValueError, match=r"token id 50400 is out of range"):
        session.evaluate_and_verify([4], [6, model.n_vocab], sampler)
    with pytest.raises(ContextFullError):
        session.evaluate_and_verify([4], list(range(200)), sampler)
    assert session.history == [1, 2, 3]

    evaluator = core.BatchEvaluator(model._model, n_threads=1)
    with pytest.raises(ValueError, match=r"items\[0\].*needs a sampler"):
        evaluator.evaluate_and_verify([(session, [4], None, False, 0, [5])])
    with pytest.raises(ValueError, match=r"items\[0\].*exactly one token"):
        evaluator.evaluate_and_verify([(session, [4, 5], sampler, False, 0, [5])])
    assert session.history == [1, 2, 3]


def test_batched_verification_gives_each_session_what_it_gets_alone(model):
    greedy = SamplingParams(temperature=0)
    prompts = [model.tokenize(p) for p in PROMPTS[:3]]
    drafts = [[5, 6], [], [7]]
    alone = []
    for prompt, draft in zip(prompts, drafts):
        session = new_session(model)
        session.evaluate(prompt[:-1])
        alone.append(
            (
                [s[0] for s in session.evaluate_and_verify([prompt[-1]], draft, greedy.sampler(model.n_vocab, 0))],
                session.history,
            )
        )

    sessions = [new_session(model) for _ in prompts]
    for session, prompt in zip(sessions, prompts):
        session.evaluate(prompt[:-1])
    evaluator = core.BatchEvaluator(model._model, n_threads=1)
    items = [(s, [p[-1]], greedy.sampler(model.n_vocab, 0), False, 0, d) for s, p, d in zip(sessions, prompts, drafts)]
    results = evaluator.evaluate_and_verify(items)

    assert [([step[0] for step in steps], s.history) for steps, s in zip(results, sessions)] == alone


# -- the argument -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lookup", "error", "match"),
    [
        (-1, ValueError, "lookup must be >= 0"),
        (16, ValueError, "lookup must be <= 15"),
        (1.5, TypeError, "lookup must be an integer"),
        ("8", TypeError, "lookup must be an integer"),
        (True, TypeError, "lookup must be an integer, got bool"),
    ],
)
def test_a_bad_lookup_is_refused_naming_it(model, lookup, error, match):
    with pytest.raises(error, match=match):
        model.session().generate("Hello", lookup=lookup)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"max_draft": 0}, "lookup.max_draft must be >= 1"),
        ({"min_ngram": 0}, "lookup.min_ngram must be >= 1"),
        ({"min_ngram": 3, "max_ngram": 2}, "lookup.max_ngram must be >= 3"),
    ],
)
def test_bad_lookup_options_are_refused_naming_the_field(fields, match):
    with pytest.raises(ValueError, match=match):
        PromptLookup(**fields)


def test_lookup_zero_is_off(model):
    result = complete(model, PROMPTS[0], max_tokens=20, lookup=0, **GREEDY)
    assert result.timings.drafted_tokens == 0
