"""Streaming generation: what the generator yields and when it stops."""

from __future__ import annotations

import numpy as np
import pytest

from gptj_ggml import Model, Token

from gguf_edit import rewrite_gguf

EOS = 50256


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f16"))


def test_generate_yields_tokens_with_id_and_text(model):
    tokens = list(model.generate("Once upon a time", max_tokens=8))
    assert len(tokens) == 8
    assert all(isinstance(t, Token) and isinstance(t.id, int) and isinstance(t.text, str) for t in tokens)
    assert "".join(t.text for t in tokens) == model.detokenize([t.id for t in tokens])


def test_generate_is_lazy_and_streams(model):
    stream = model.generate("Hello", max_tokens=5)
    first = next(stream)
    assert isinstance(first, Token)
    assert len(list(stream)) == 4


def test_zero_max_tokens_yields_nothing(model):
    assert list(model.generate("Hello", max_tokens=0)) == []


def test_same_seed_gives_the_same_tokens(model):
    def run(seed):
        return [t.id for t in model.generate("The weather", max_tokens=16, temperature=1.0, seed=seed)]

    assert run(1234) == run(1234)
    assert run(1234) != run(4321)


def test_sampling_follows_the_softmax_of_the_logits(model):
    # Draw the first token many times and compare with softmax(logits / T) computed in numpy.
    prompt = model.tokenize("Statistics")
    temperature = 3.0
    logits = model.logits(prompt)[-1].astype(np.float64) / temperature
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    draws = [next(model.generate(prompt, max_tokens=1, temperature=temperature, seed=s)).id for s in range(300)]
    top = int(probs.argmax())
    assert abs(draws.count(top) / len(draws) - probs[top]) < 0.08
    assert all(probs[d] > 0 for d in draws)


def test_generation_stops_at_end_of_text(tiny_model_path, tmp_path):
    def favour_eos(name, data):
        if name == "output.bias":
            data = data.copy()
            data[EOS] = 1e4  # end-of-text wins every time
        return data

    path = rewrite_gguf(tiny_model_path("f16"), tmp_path / "eos.gguf", change_tensor=favour_eos)
    assert list(Model(path).generate("Hello", max_tokens=10)) == []


def test_generation_stops_at_the_end_of_the_context(tiny_model_path):
    model = Model(tiny_model_path("f16"), n_ctx=16)
    prompt = list(range(100, 110))
    tokens = list(model.generate(prompt, max_tokens=100))
    # Tokens 1..6 are evaluated into the 16 slots after the 10-token prompt; the 7th is
    # sampled from the full context and cannot be evaluated any more.
    assert len(tokens) == 16 - len(prompt) + 1


def test_prompt_longer_than_the_context_raises(tiny_model_path):
    model = Model(tiny_model_path("f16"), n_ctx=8)
    with pytest.raises(ValueError, match="n_ctx=8"):
        model.generate(list(range(9)))


def test_continuing_a_generation_reuses_the_context_and_matches_a_fresh_model(tiny_model_path):
    path = tiny_model_path("f32")
    warm = Model(path)
    prompt = warm.tokenize("A long story begins")
    first = [t.id for t in warm.generate(prompt, max_tokens=6)]
    second = [t.id for t in warm.generate(prompt + first, max_tokens=6)]
    fresh = [t.id for t in Model(path).generate(prompt, max_tokens=12)]
    assert first + second == fresh


def test_empty_prompt_starts_from_end_of_text(model):
    assert [t.id for t in model.generate("", max_tokens=4)] == [t.id for t in model.generate([EOS], max_tokens=4)]


def test_bad_arguments_raise_value_error(model):
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate("x", max_tokens=-1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate("x", temperature=-0.5)
