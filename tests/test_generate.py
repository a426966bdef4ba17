"""Streaming generation: what the generator yields, when it stops, and what it reports."""

from __future__ import annotations

import math

import pytest

from gptj_ggml import GREEDY, Completion, ContextFullError, Generation, Model, Token

from gguf_edit import rewrite_gguf

EOS = 50256
GREEDY_ARGS = {"temperature": GREEDY.temperature, "repeat_penalty": GREEDY.repeat_penalty}


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f16"))


@pytest.fixture(scope="module")
def eos_model_path(tiny_model_path, tmp_path_factory):
    """A model whose end-of-text logit wins every time."""

    def favour_eos(name, data):
        if name == "output.bias":
            data = data.copy()
            data[EOS] = 1e4
        return data

    return rewrite_gguf(tiny_model_path("f16"), tmp_path_factory.mktemp("eos") / "eos.gguf", change_tensor=favour_eos)


# Seeded where a test counts the tokens: unseeded sampling from the random model draws
# <|endoftext|> about once in a thousand generations of a few tokens (3 of 3,000 measured),
# which ends the generation early.
SEED = 0


def test_generate_yields_tokens_with_id_and_text(model):
    tokens = list(model.generate("Once upon a time", max_tokens=8, seed=SEED))
    assert len(tokens) == 8
    assert all(isinstance(t, Token) and isinstance(t.id, int) and isinstance(t.text, str) for t in tokens)
    assert all(t.logprob is None for t in tokens)
    assert "".join(t.text for t in tokens) == model.detokenize([t.id for t in tokens])


def test_generate_is_lazy_and_streams(model):
    stream = model.generate("Hello", max_tokens=5, seed=SEED)
    assert isinstance(stream, Generation) and stream.finish_reason is None
    first = next(stream)
    assert isinstance(first, Token) and stream.tokens == [first.id]
    assert len(list(stream)) == 4
    assert stream.finish_reason == "length"


def test_zero_max_tokens_yields_nothing(model):
    assert list(model.generate("Hello", max_tokens=0)) == []


def test_same_seed_gives_the_same_tokens(model):
    def run(seed):
        return [t.id for t in model.generate("The weather", max_tokens=12, temperature=1.5, seed=seed)]

    assert run(1234) == run(1234)
    assert run(1234) != run(4321)


def test_the_seed_of_an_unseeded_generation_reproduces_it(model):
    first = model.complete("The weather", max_tokens=12, temperature=1.5)
    assert model.complete("The weather", max_tokens=12, temperature=1.5, seed=first.seed).tokens == first.tokens


def test_complete_returns_text_tokens_reason_and_timings(model):
    result = model.complete("Once upon a time", max_tokens=6, **GREEDY_ARGS)
    streamed = list(model.generate("Once upon a time", max_tokens=6, **GREEDY_ARGS))
    assert isinstance(result, Completion)
    assert result.tokens == [t.id for t in streamed]
    assert result.text == "".join(t.text for t in streamed)
    assert result.finish_reason == "length" and result.logprobs is None
    timings = result.timings
    assert timings.generated_tokens == 6 and timings.prompt_tokens + timings.reused_tokens == 4
    assert timings.prompt_ms > 0 and timings.generation_ms > 0 and 0 < timings.sample_ms < timings.total_ms
    assert timings.load_ms == model.load_ms > 0
    assert "ms/token" in str(timings)


def test_logprobs_are_the_log_softmax_of_the_model(model):
    prompt = model.tokenize("Probability")
    result = model.complete(prompt, max_tokens=3, logprobs=True, **GREEDY_ARGS)
    ids = prompt + result.tokens
    logits = model.logits(ids).astype("float64")
    for i, (token, logprob) in enumerate(zip(result.tokens, result.logprobs)):
        row = logits[len(prompt) - 1 + i]
        expected = row[token] - row.max() - math.log(math.fsum(math.exp(x - row.max()) for x in row))
        assert logprob == pytest.approx(expected, abs=1e-4)


def test_top_logprobs_are_the_most_likely_tokens_of_the_model(model):
    prompt = model.tokenize("Probability")
    tokens = list(model.generate(prompt, max_tokens=3, top_logprobs=5, temperature=1.0, seed=4))
    logits = model.logits(prompt + [t.id for t in tokens]).astype("float64")
    for i, token in enumerate(tokens):
        row = logits[len(prompt) - 1 + i]
        log_softmax = row - row.max() - math.log(math.fsum(math.exp(x - row.max()) for x in row))
        expected_ids = sorted(range(len(row)), key=lambda j: (-row[j], j))[:5]
        assert [id_ for id_, _ in token.top_logprobs] == expected_ids
        assert [lp for _, lp in token.top_logprobs] == pytest.approx([log_softmax[j] for j in expected_ids], abs=1e-4)
        assert token.logprob == pytest.approx(log_softmax[token.id], abs=1e-4)  # top_logprobs implies logprobs


def test_generation_stops_at_end_of_text(eos_model_path):
    generation = Model(eos_model_path).generate("Hello", max_tokens=10)
    assert list(generation) == []
    assert generation.finish_reason == "eos" and generation.timings.generated_tokens == 1


def test_ignore_eos_never_produces_end_of_text(eos_model_path):
    result = Model(eos_model_path).complete("Hello", max_tokens=10, ignore_eos=True)
    assert len(result.tokens) == 10 and EOS not in result.tokens and result.finish_reason == "length"


def test_a_full_context_raises_after_yielding_what_was_generated(tiny_model_path):
    model = Model(tiny_model_path("f16"), n_ctx=16)
    prompt = list(range(100, 110))
    yielded = []
    with pytest.raises(ContextFullError, match="context is full"):
        for token in model.generate(prompt, max_tokens=100, seed=SEED):
            yielded.append(token.id)
    # Tokens 1..6 are evaluated into the 16 slots after the 10-token prompt; the 7th is
    # sampled from the full context and cannot be evaluated any more.
    assert len(yielded) == 16 - len(prompt) + 1


def test_on_context_full_stop_ends_the_generation(tiny_model_path):
    model = Model(tiny_model_path("f16"), n_ctx=16)
    result = model.complete(list(range(100, 110)), max_tokens=100, on_context_full="stop", seed=SEED)
    assert len(result.tokens) == 7 and result.finish_reason == "context"


def test_prompt_longer_than_the_context_raises(tiny_model_path):
    model = Model(tiny_model_path("f16"), n_ctx=8)
    with pytest.raises(ValueError, match="n_ctx=8"):
        model.generate(list(range(9)))


def test_continuing_a_generation_reuses_the_context_and_matches_a_fresh_model(tiny_model_path):
    path = tiny_model_path("f32")
    warm = Model(path)
    prompt = warm.tokenize("A long story begins")
    first = [t.id for t in warm.generate(prompt, max_tokens=6, temperature=0)]
    second = warm.generate(prompt + first, max_tokens=6, temperature=0)
    second_ids = [t.id for t in second]
    assert second.timings.reused_tokens == len(prompt) + 5  # the 6th token was never evaluated
    fresh = [t.id for t in Model(path).generate(prompt, max_tokens=12, temperature=0)]
    assert first + second_ids == fresh


def test_empty_prompt_starts_from_end_of_text(model):
    assert [t.id for t in model.generate("", max_tokens=4, seed=3)] == [
        t.id for t in model.generate([EOS], max_tokens=4, seed=3)
    ]


def test_bad_arguments_raise_value_error(model):
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate("x", max_tokens=-1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate("x", temperature=-0.5)
    with pytest.raises(ValueError, match="top_p"):
        model.generate("x", top_p=0)
    with pytest.raises(ValueError, match="on_context_full"):
        model.generate("x", on_context_full="wrap")
    with pytest.raises(ValueError, match="n_keep"):
        model.generate("x", n_keep=-1)
    with pytest.raises(ValueError, match="stop strings"):
        model.generate("x", stop=[""])


def test_repr_shows_state_and_text(model):
    generation = model.generate("Hello", max_tokens=2, **GREEDY_ARGS)
    assert "running" in repr(generation)
    generation.result()
    assert repr(generation).startswith("<Generation length, 2 tokens: ")
    assert "n_ctx=" in repr(model) and "type=f16" in repr(model)


def test_a_with_block_cancels_a_generation_left_by_break(model):
    with model.generate([1, 2, 3], max_tokens=20, ignore_eos=True, seed=0) as generation:
        for _ in generation:
            break
        assert generation.finish_reason is None  # a break only pauses: next() would go on
    assert generation.finish_reason == "cancelled" and len(generation.tokens) == 1


def test_a_with_block_keeps_the_reason_of_a_generation_that_ended(model):
    with model.generate([1, 2, 3], max_tokens=3, ignore_eos=True) as generation:
        list(generation)
    assert generation.finish_reason == "length"


def test_opening_a_model_makes_no_session_until_one_is_needed(tiny_model_path):
    model = Model(tiny_model_path("f32"), n_ctx=32)
    assert model._own_session is None and model.n_ctx == 32 and repr(model)  # no KV cache allocated yet
    model.complete([1, 2], max_tokens=1)
    assert model._own_session is not None and model._own_session.n_ctx == 32


@pytest.mark.parametrize("argument", [{"n_ctx": 0}, {"n_threads": -1}, {"n_batch": 0}])
def test_bad_session_sizes_fail_at_load(tiny_model_path, argument):
    with pytest.raises(ValueError, match=next(iter(argument))):
        Model(tiny_model_path("f32"), **argument)


def test_is_cancelled_is_asked_before_every_engine_step(model):
    calls = []
    # A stop string starting with "e" holds back every token that ends in "e" for another step,
    # so some next() calls run two or more engine steps: each is asked about.
    generation = model.generate(
        "Once upon a time", max_tokens=24, stop=["eqqqq"], is_cancelled=lambda: bool(calls.append(1))
    )
    generation.result()
    assert len(calls) == generation.timings.generated_tokens


def test_is_cancelled_stops_before_the_next_step_and_the_cache_keeps_what_was_evaluated(model):
    session = model.session()
    prompt = model.tokenize("Once upon a time")
    flag = {"set": False}
    generation = session.generate(prompt, max_tokens=20, ignore_eos=True, seed=0, is_cancelled=lambda: flag["set"])
    tokens = [next(generation) for _ in range(3)]
    flag["set"] = True  # as another thread would set it
    assert list(generation) == []
    assert generation.finish_reason == "cancelled" and generation.timings.generated_tokens == 3
    # The third sampled token was never evaluated: the cache holds the prompt and the first two.
    assert session.history == prompt + [t.id for t in tokens[:2]]


def test_nan_logits_from_the_model_are_an_evaluation_error_saying_so(tiny_model_path, tmp_path):
    # Before, NaN logits reached the sampler and were reported as "every token has a logit of
    # -inf (check logit_bias)".
    import numpy as np

    from gptj_ggml import EvaluationError

    def poison(name, data):
        return np.full_like(data, np.nan) if name == "output.bias" else data

    model = Model(rewrite_gguf(tiny_model_path("f16"), tmp_path / "nan.gguf", change_tensor=poison))
    with pytest.raises(EvaluationError, match="the model produced NaN logits"):
        model.complete([1, 2, 3], max_tokens=2)
