"""Sessions: their own KV cache over shared weights, prefix reuse, context shifts, early
exits, and threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gptj_ggml import Model, Session, SessionBusyError

GREEDY_ARGS = {"temperature": 0.0, "repeat_penalty": 1.0}


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f32"), n_ctx=64)


def ids(n: int, start: int = 1000) -> list[int]:
    return list(range(start, start + n))


def test_sessions_share_the_weights_and_keep_their_own_history(model):
    a, b = model.session(), model.session()
    assert isinstance(a, Session) and a.model is b.model is model
    a.complete(ids(5), max_tokens=3, **GREEDY_ARGS)
    assert a.history[:5] == ids(5) and b.history == []
    assert "n_past=" in repr(a)


def test_a_session_takes_its_own_n_ctx(model):
    assert model.session(n_ctx=32).n_ctx == 32 and model.session().n_ctx == 64


def test_prefix_reuse_gives_the_logits_of_a_fresh_evaluation(model):
    session = model.session()
    first = session.complete(ids(10), max_tokens=4, logprobs=True, **GREEDY_ARGS)
    follow_up = ids(10) + first.tokens + ids(5, start=2000)
    second = session.complete(follow_up, max_tokens=4, logprobs=True, **GREEDY_ARGS)
    assert second.timings.reused_tokens == 10 + 3 and second.timings.prompt_tokens == 1 + 5
    fresh = model.session().complete(follow_up, max_tokens=4, logprobs=True, **GREEDY_ARGS)
    assert second.tokens == fresh.tokens
    np.testing.assert_allclose(second.logprobs, fresh.logprobs, atol=1e-5)
    np.testing.assert_allclose(session.evaluate([7]), model.session().logits(session.history)[-1], atol=1e-5)


def test_a_different_prompt_keeps_only_the_common_prefix(model):
    session = model.session()
    session.complete(ids(12), max_tokens=1)
    result = session.complete(ids(6) + ids(4, start=3000), max_tokens=1)
    assert result.timings.reused_tokens == 6 and result.timings.prompt_tokens == 4


def test_breaking_out_leaves_the_evaluated_tokens_and_continuing_matches_one_run(model):
    session = model.session()
    whole = model.session().complete(ids(8), max_tokens=10, **GREEDY_ARGS).tokens
    generation = session.generate(ids(8), max_tokens=10, **GREEDY_ARGS)
    taken = []
    for token in generation:
        taken.append(token.id)
        if len(taken) == 4:
            break
    generation.close()
    assert generation.finish_reason == "cancelled"
    # The 4th token was sampled but never evaluated: the cache holds exactly the rest.
    assert session.history == ids(8) + taken[:3]
    rest = session.complete(ids(8) + taken, max_tokens=6, **GREEDY_ARGS)
    assert rest.timings.reused_tokens == 8 + 3
    assert taken + rest.tokens == whole


def test_dropping_an_unfinished_generation_frees_the_session_for_other_threads(model):
    session = model.session()
    generation = session.generate(ids(4), max_tokens=10)
    next(generation)
    del generation  # no reference left: closed at once
    errors = []
    thread = threading.Thread(target=lambda: errors.append(session.complete(ids(4), max_tokens=1).finish_reason))
    thread.start()
    thread.join()
    assert errors == ["length"]


def test_a_new_call_in_the_same_thread_supersedes_an_unfinished_generation(model):
    session = model.session()
    old = session.generate(ids(4), max_tokens=10)
    next(old)
    session.complete(ids(4, start=5000), max_tokens=2)
    assert old.finish_reason == "cancelled"
    assert list(old) == []


def test_another_thread_using_a_session_with_an_unfinished_generation_raises(model):
    session = model.session()
    generation = session.generate(ids(4), max_tokens=10)
    next(generation)
    raised = []

    def intrude() -> None:
        try:
            session.complete(ids(4), max_tokens=1)
        except SessionBusyError as error:
            raised.append(str(error))

    thread = threading.Thread(target=intrude)
    thread.start()
    thread.join()
    assert raised and "another thread" in raised[0]
    assert len(list(generation)) == 9  # the owner carries on undisturbed


def test_two_sessions_in_two_threads_give_the_results_of_serial_runs(model):
    prompts = [ids(6), ids(6, start=4000)]
    serial = [model.session().complete(p, max_tokens=8, seed=5).tokens for p in prompts]
    results: dict[int, list[int]] = {}
    sessions = [model.session(n_threads=1) for _ in prompts]

    def run(i: int) -> None:
        results[i] = sessions[i].complete(prompts[i], max_tokens=8, seed=5).tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[0], results[1]] == serial


def test_context_shift_keeps_n_keep_and_drops_the_oldest_half(tiny_model_path):
    model = Model(tiny_model_path("f32"), n_ctx=16)
    session = model.session()
    prompt = ids(10)
    result = session.complete(prompt, max_tokens=30, on_context_full="shift", n_keep=4, **GREEDY_ARGS)
    assert len(result.tokens) == 30 and result.finish_reason == "length"
    everything = prompt + result.tokens
    history = session.history
    # The cache holds the first n_keep tokens, then the most recent ones (the last sampled
    # token is never evaluated).
    assert history[:4] == prompt[:4]
    tail = history[4:]
    assert tail == everything[len(everything) - 1 - len(tail) : -1]
    assert len(history) <= 16


def test_a_shifted_cache_matches_a_fresh_evaluation_of_the_kept_tokens(tiny_model_path):
    model = Model(tiny_model_path("f32"), n_ctx=16)
    session = model.session()
    session.complete(ids(10), max_tokens=20, on_context_full="shift", n_keep=3, **GREEDY_ARGS)
    kept = session.history
    np.testing.assert_allclose(session.evaluate([42]), model.session().logits(kept + [42])[-1], atol=1e-4)


def test_evaluate_past_the_context_raises_and_leaves_the_session_unchanged(tiny_model_path):
    from gptj_ggml import ContextFullError

    session = Model(tiny_model_path("f32"), n_ctx=8).session()
    session.evaluate(ids(6))
    with pytest.raises(ContextFullError):
        session.evaluate(ids(3))
    assert session.history == ids(6)


def test_reset_empties_the_cache(model):
    session = model.session()
    session.evaluate(ids(3))
    session.reset()
    assert session.n_past == 0 and session.history == []


def test_a_kv_cache_larger_than_the_machine_is_a_value_error_before_any_allocation(tiny_model_path):
    # Under overcommit the allocation itself may succeed; filling the context would then get
    # the process killed. 2**30 positions of this model's cache take 512 GiB.
    model = Model(tiny_model_path("f32"), n_ctx=2**30)
    with pytest.raises(ValueError, match=r"n_ctx = 1073741824 needs a KV cache of 512\.0 GiB, more than this machine's"):
        model.logits([1, 2])


def test_compute_buffers_larger_than_the_machine_are_a_value_error(tiny_model_path):
    # The cache alone fits (4 GiB), but the attention scores of a full batch at the end of
    # the context would need 64 GiB: measured before they are allocated.
    model = Model(tiny_model_path("f32"), n_ctx=8_000_000)
    with pytest.raises(ValueError, match=r"n_ctx = 8000000 with n_batch = 512 needs .* of compute buffers, more than"):
        model.logits([1, 2])
    assert model.session(n_ctx=8_000_000, n_batch=1).n_ctx == 8_000_000  # a smaller batch fits


def test_discard_counts_that_overflow_an_int_are_refused(model):
    from gptj_ggml._native import core

    session = core.Session(model._model, 16, 1, 8)
    session.evaluate([1, 2, 3], False)
    with pytest.raises(ValueError, match="cannot discard 1 tokens after 2147483647 of 3"):
        session.discard(2**31 - 1, 1)
    assert session.history == [1, 2, 3]
