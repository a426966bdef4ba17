"""The native BatchEvaluator: several sessions' tokens in one graph, each sampled on its own.

Each sequence must get what it gets alone: the same greedy tokens, logits equal up to float
rounding, the same seeded samples, and a cache that later single-session evaluations read as if
the sequence had been evaluated alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from gptj_ggml import ContextFullError, Model, SamplingParams
from gptj_ggml._native import core

GREEDY = SamplingParams(temperature=0)
PROMPTS = [
    [1000, 1001, 1002],
    [2000 + i for i in range(11)],
    [3000],
    [4000 + i for i in range(6)],
]


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f32"), n_ctx=128)


def new_session(model, n_ctx=128, n_batch=512):
    return core.Session(model._model, n_ctx=n_ctx, n_threads=1, n_batch=n_batch)


def greedy_alone(model, prompt, n_tokens):
    session, sampler = new_session(model), GREEDY.sampler(model.n_vocab, 0)
    out, pending = [], prompt
    for _ in range(n_tokens):
        token = session.evaluate_and_sample(pending, sampler)[0]
        out.append(token)
        pending = [token]
    return out


def step_together(evaluator, sessions, pendings, samplers, logprob=False):
    items = [(s, p, sm, logprob, 0) for s, p, sm in zip(sessions, pendings, samplers)]
    return evaluator.evaluate_and_sample(items)


@pytest.mark.parametrize("n_batch", [512, 4, 1])
def test_sequences_decoded_together_give_the_greedy_tokens_each_gives_alone(model, n_batch):
    # n_batch 4 and 1: the prompts spread over several graphs, split mid-prompt.
    n_tokens = 12
    alone = [greedy_alone(model, p, n_tokens) for p in PROMPTS]
    evaluator = core.BatchEvaluator(model._model, n_threads=1, n_batch=n_batch)
    sessions = [new_session(model) for _ in PROMPTS]
    samplers = [GREEDY.sampler(model.n_vocab, 0) for _ in PROMPTS]
    pendings, together = list(PROMPTS), [[] for _ in PROMPTS]
    for _ in range(n_tokens):
        for i, (token, *_rest) in enumerate(step_together(evaluator, sessions, pendings, samplers)):
            together[i].append(token)
            pendings[i] = [token]
    assert together == alone
    assert [s.history for s in sessions] == [p + t[:-1] for p, t in zip(PROMPTS, alone)]


def test_the_batched_cache_is_the_one_each_sequence_builds_alone(model):
    evaluator = core.BatchEvaluator(model._model, n_threads=1, n_batch=8)
    sessions = [new_session(model) for _ in PROMPTS]
    results = evaluator.evaluate_and_sample([(s, p, None, False, 0) for s, p in zip(sessions, PROMPTS)])
    assert [r[0] for r in results] == [-1] * len(PROMPTS)
    for session, prompt in zip(sessions, PROMPTS):
        alone = new_session(model)
        alone.evaluate(prompt)
        expected = alone.evaluate([7, 8])
        np.testing.assert_allclose(session.evaluate([7, 8]), expected, rtol=1e-3, atol=1e-3)


def test_logprobs_match_the_single_session_ones(model):
    evaluator = core.BatchEvaluator(model._model, n_threads=1)
    sessions = [new_session(model) for _ in PROMPTS]
    items = [(s, p, GREEDY.sampler(model.n_vocab, 0), True, 3) for s, p in zip(sessions, PROMPTS)]
    for (token, logprob, eval_ms, sample_ms, top), prompt in zip(evaluator.evaluate_and_sample(items), PROMPTS):
        alone = new_session(model).evaluate_and_sample(prompt, GREEDY.sampler(model.n_vocab, 0), True, 3)
        assert token == alone[0] and top[0][0] == alone[4][0][0] and len(top) == 3
        assert logprob == pytest.approx(alone[1], abs=1e-3)
        assert eval_ms > 0 and sample_ms >= 0


def test_seeded_sampling_in_a_batch_draws_what_it_draws_alone(model):
    params = SamplingParams(temperature=1.0, top_k=40)
    prompt = PROMPTS[1]
    solo_session, solo_sampler = new_session(model), params.sampler(model.n_vocab, 123)
    # The prompt is read in chunks without a sampler first: no draw may be taken from its state.
    evaluator = core.BatchEvaluator(model._model, n_threads=1, n_batch=4)
    session, other = new_session(model), new_session(model)
    sampler = params.sampler(model.n_vocab, 123)
    evaluator.evaluate_and_sample([(session, prompt[:5], None, False, 0), (other, PROMPTS[0], None, False, 0)])
    pending, solo_pending = prompt[5:], prompt
    for _ in range(8):
        token = evaluator.evaluate_and_sample(
            [(session, pending, sampler, False, 0), (other, [5], GREEDY.sampler(model.n_vocab, 0), False, 0)]
        )[0][0]
        solo = solo_session.evaluate_and_sample(solo_pending, solo_sampler)[0]
        assert token == solo
        pending = solo_pending = [token]


def test_bad_items_are_refused_before_anything_is_evaluated(model):
    evaluator = core.BatchEvaluator(model._model, n_threads=1)
    a, b = new_session(model), new_session(model, n_ctx=8)
    a.evaluate([1, 2, 3])
    sampler = GREEDY.sampler(model.n_vocab, 0)
    cases = [
        ([], ValueError, "at least one item"),
        ([(a, [], sampler, False, 0)], ValueError, r"items\[0\]: no tokens"),
        ([(b, [5], None, False, 0), (a, [model.n_vocab], None, False, 0)], ValueError, r"items\[1\]: token id"),
        ([(a, [5], None, False, 0), (a, [6], None, False, 0)], ValueError, r"items\[1\]: the same session"),
        ([(a, [5], None, False, 0), (b, list(range(9)), None, False, 0)], ContextFullError, r"items\[1\]: the context"),
        ([(a, [5], None, False, -1)], ValueError, "top_logprobs"),
        ([(a, [5], SamplingParams().sampler(10, 0), False, 0)], ValueError, r"items\[0\]: the Sampler"),
        ([(a, [5])], ValueError, r"items\[0\] must be"),
    ]
    for items, error, message in cases:
        with pytest.raises(error, match=message):
            evaluator.evaluate_and_sample(items)
        assert a.history == [1, 2, 3] and b.history == []


def test_a_session_of_another_model_is_refused(model, tiny_model_path):
    other = Model(tiny_model_path("f16"), n_ctx=32)
    evaluator = core.BatchEvaluator(model._model, n_threads=1)
    with pytest.raises(ValueError, match="another model"):
        evaluator.evaluate_and_sample([(core.Session(other._model, n_ctx=32), [1], None, False, 0)])


def test_copy_from_continues_as_the_source_would(model):
    source = new_session(model)
    source.evaluate(PROMPTS[1])
    copy = new_session(model, n_ctx=64)
    copy.evaluate([9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9])  # overwritten
    copy.copy_from(source, len(PROMPTS[1]) - 2)
    assert copy.history == PROMPTS[1][:-2]
    expected = new_session(model).evaluate(PROMPTS[1])
    np.testing.assert_allclose(copy.evaluate(PROMPTS[1][-2:]), expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="cannot copy 99 tokens"):
        copy.copy_from(source, 99)
    with pytest.raises(ContextFullError, match="into a context of 4"):
        new_session(model, n_ctx=4).copy_from(source, 5)


def test_the_evaluator_reports_its_settings(model):
    evaluator = core.BatchEvaluator(model._model, n_threads=1, n_batch=16)
    assert (evaluator.n_batch, evaluator.n_threads, evaluator.adaptive_threads) == (16, 1, False)
    evaluator.n_threads = 0
    assert evaluator.adaptive_threads and evaluator.n_threads >= 1
    with pytest.raises(ValueError, match="n_batch"):
        core.BatchEvaluator(model._model, n_batch=0)
