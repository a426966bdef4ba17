"""Every public entry point checks its arguments before the engine touches them: a wrong type is
a TypeError and a wrong value a ValueError, each naming the argument; never a crash, a pybind11
"Unable to cast" RuntimeError, or a silent conversion (1.5 tokens, 0 meaning "the default").

The last tests feed each entry point generated hostile values (floats, bools, huge and negative
integers, strings, None, nested lists) and accept only TypeError, ValueError or success."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gptj_ggml
from gptj_ggml import ContextFullError, Model, SamplingParams

from gguf_edit import rewrite_gguf

N_VOCAB = 50400


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f16"), n_ctx=64, n_threads=1)


# -- token ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [2**31, 2**63, -(2**31) - 1], ids=["2**31", "2**63", "below-int32"])
def test_token_ids_beyond_32_bits_are_value_errors_naming_the_argument(model, bad):
    # Before: RuntimeError "Unable to cast Python instance of type <class 'list'>".
    with pytest.raises(ValueError, match=r"\(ids\[1\]\)"):
        model.logits([1, bad])
    with pytest.raises(ValueError, match=r"\(ids\[0\]\)"):
        model.session().evaluate([bad])
    with pytest.raises(ValueError, match=r"\(prompt\[2\]\)"):
        model.generate([1, 2, bad])
    with pytest.raises(ValueError, match=r"ids\[0\] = .* is out of range"):
        model.detokenize([bad])
    with pytest.raises(ValueError, match="token id"):
        model.tokenizer.token_bytes(bad)
    with pytest.raises(ValueError, match=r"history\[0\]"):
        gptj_ggml.probabilities(np.zeros(8, np.float32), history=[bad])


def test_token_ids_that_are_not_integers_are_type_errors(model):
    with pytest.raises(TypeError, match=r"ids\[1\] must be an integer, got float"):
        model.logits([1, 2.5])
    with pytest.raises(TypeError, match=r"prompt\[0\] must be an integer, got bool"):
        model.complete([True], max_tokens=1)
    with pytest.raises(TypeError, match="prompt must be a sequence of token ids, not bytes"):
        model.complete(b"hello", max_tokens=1)
    with pytest.raises(TypeError, match=r"ids\[0\] must be an integer, got str"):
        model.detokenize(["1"])


def test_numpy_token_ids_are_accepted(model):
    ids = np.array([1, 2, 3], dtype=np.int64)
    np.testing.assert_array_equal(model.logits(ids), model.logits([1, 2, 3]))
    assert model.detokenize(np.array([464], np.int32)) == "The"


def test_logit_bias_keys_beyond_32_bits_are_value_errors(model):
    with pytest.raises(ValueError, match="logit_bias key"):
        SamplingParams(logit_bias={2**31: 1.0})
    with pytest.raises(TypeError, match=r"logit_bias\[3\] must be a number, got str"):
        SamplingParams(logit_bias={3: "1"})


# -- empty inputs -------------------------------------------------------------------------


def test_empty_logits_are_a_value_error():
    # Before: a segfault (a sampler over no tokens read an empty vector).
    with pytest.raises(ValueError, match="at least one"):
        gptj_ggml.probabilities(np.zeros(0, np.float32))


def test_a_sampler_for_no_vocabulary_is_a_value_error():
    with pytest.raises(ValueError, match="n_vocab must be positive"):
        SamplingParams().sampler(0, seed=0)


def test_sampling_after_no_tokens_is_a_value_error_not_a_read_of_nothing(model):
    from gptj_ggml._native import core

    session = core.Session(model._model, 16, 1, 8)
    sampler = SamplingParams().sampler(N_VOCAB, seed=0)
    with pytest.raises(ValueError, match="at least one token"):
        session.evaluate_and_sample([], sampler)
    with pytest.raises(ValueError, match="at least one token"):
        session.generate_loop([], 2, sampler)


def test_logits_of_the_wrong_dtype_or_shape_are_refused():
    with pytest.raises(TypeError, match="dtype"):
        gptj_ggml.probabilities(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="one-dimensional"):
        gptj_ggml.probabilities(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="params must be a SamplingParams"):
        gptj_ggml.probabilities(np.zeros(4, np.float32), {"temperature": 0})


# -- counts -------------------------------------------------------------------------------


def test_max_tokens_must_be_an_integer(model):
    # Before: 1.5 was accepted and the generation ran to the end of the context.
    with pytest.raises(TypeError, match="max_tokens must be an integer, got float"):
        model.complete("Hello", max_tokens=1.5)
    with pytest.raises(ValueError, match="max_tokens must be >= 0"):
        model.complete("Hello", max_tokens=-1)


@pytest.mark.parametrize("name", ["n_ctx", "n_threads", "n_batch"])
def test_a_zero_size_is_refused_by_the_model_and_by_its_sessions_alike(model, tiny_model_path, name):
    # Before: model.session(n_batch=0) quietly used the default while Model(n_batch=0) raised.
    with pytest.raises(ValueError, match=f"{name} must be positive, got 0"):
        Model(tiny_model_path("f16"), **{name: 0})
    with pytest.raises(ValueError, match=f"{name} must be positive, got 0"):
        model.session(**{name: 0})
    with pytest.raises(TypeError, match=f"{name} must be an integer, got float"):
        model.session(**{name: 2.0})


def test_other_counts_must_be_integers_in_range(model):
    with pytest.raises(TypeError, match="top_logprobs must be an integer"):
        model.complete("Hi", max_tokens=1, top_logprobs=1.5)
    with pytest.raises(ValueError, match="top_logprobs must be <= 50400"):
        model.complete("Hi", max_tokens=1, top_logprobs=2**31)
    with pytest.raises(TypeError, match="n_keep must be an integer"):
        model.complete("Hi", max_tokens=1, n_keep="4")
    with pytest.raises(TypeError, match="seed must be an integer"):
        model.complete("Hi", max_tokens=1, seed=1.5)
    with pytest.raises(TypeError, match="sampling must be a SamplingParams"):
        model.complete("Hi", max_tokens=1, sampling={"temperature": 0})
    with pytest.raises(ValueError, match="n_threads must be <= "):
        model.session().n_threads = 2**40


# -- smaller ones -------------------------------------------------------------------------


def test_a_context_of_one_token_says_it_is_too_small(tiny_model_path):
    # Before: "n_keep must be in [0, n_ctx - 2 = -1], got 0".
    with pytest.raises(ValueError, match="the context is too small to generate: n_ctx=1"):
        Model(tiny_model_path("f16"), n_ctx=1).complete("Hello")


@pytest.fixture(scope="module")
def no_special_tokens(tiny_model_path, tmp_path_factory):
    """The tiny model without bos and eos ids (GGUF allows both to be absent)."""
    path = tmp_path_factory.mktemp("no-special") / "no-special.gguf"
    drop = ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id")
    return Model(rewrite_gguf(tiny_model_path("f16"), path, drop_kv=drop), n_ctx=32)


def test_ignore_eos_on_a_model_without_an_eos_token_is_a_no_op(no_special_tokens):
    # Before: "logit_bias token id -1 is out of range" for an argument that names no logit_bias.
    assert no_special_tokens.tokenizer.eos_id == -1
    result = no_special_tokens.complete([1, 2], max_tokens=4, ignore_eos=True, temperature=0)
    assert len(result.tokens) == 4 and result.finish_reason == "length"


def test_an_empty_prompt_without_a_bos_token_is_a_value_error(no_special_tokens):
    with pytest.raises(ValueError, match="no beginning-of-text token"):
        no_special_tokens.complete("", max_tokens=1)


# -- generated hostile values ---------------------------------------------------------------

HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**63, N_VOCAB, N_VOCAB - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=3),
)
_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_type_or_value_errors(call) -> None:
    try:
        call()
    except (TypeError, ValueError, ContextFullError):
        pass  # a generation longer than the context may end in ContextFullError, as documented


ENTRY_POINTS = {
    "Model.logits(ids)": lambda m, v: m.logits([1, v]),
    "Model.detokenize(ids)": lambda m, v: m.detokenize([v]),
    "Model.tokenize(text)": lambda m, v: m.tokenize(v),
    "Model.session(n_ctx)": lambda m, v: m.session(n_ctx=v),
    "Model.session(n_batch)": lambda m, v: m.session(n_batch=v),
    "Model.session(n_threads)": lambda m, v: m.session(n_threads=v),
    "Session.evaluate(ids)": lambda m, v: m.session(n_ctx=8).evaluate(v if isinstance(v, list) else [v]),
    "Session.n_threads": lambda m, v: setattr(m.session(n_ctx=8), "n_threads", v),
    "generate(prompt)": lambda m, v: m.complete(v if isinstance(v, list) else [v], max_tokens=1),
    "generate(max_tokens)": lambda m, v: m.session(n_ctx=8).complete([1], max_tokens=v),
    "generate(top_logprobs)": lambda m, v: m.complete([1], max_tokens=1, top_logprobs=v),
    "generate(n_keep)": lambda m, v: m.complete([1], max_tokens=1, n_keep=v),
    "generate(seed)": lambda m, v: m.complete([1], max_tokens=1, seed=v),
    "generate(temperature)": lambda m, v: m.complete([1], max_tokens=1, temperature=v),
    "generate(top_k)": lambda m, v: m.complete([1], max_tokens=1, top_k=v),
    "generate(logit_bias key)": lambda m, v: m.complete([1], max_tokens=1, logit_bias={v: 1.0}),
    "generate(logit_bias value)": lambda m, v: m.complete([1], max_tokens=1, logit_bias={5: v}),
    "generate(stop)": lambda m, v: m.complete([1], max_tokens=1, stop=v),
    "Tokenizer.token_bytes(id)": lambda m, v: m.tokenizer.token_bytes(v),
    "Tokenizer.token_type(id)": lambda m, v: m.tokenizer.token_type(v),
    "probabilities(logits)": lambda m, v: gptj_ggml.probabilities(v),
    "probabilities(history)": lambda m, v: gptj_ggml.probabilities(np.zeros(8, np.float32), history=[v]),
    "SamplingParams.sampler(n_vocab)": lambda m, v: SamplingParams().sampler(v, seed=0),
}


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
@_SETTINGS
@given(value=HOSTILE)
def test_hostile_arguments_raise_only_type_or_value_errors(model, entry_point, value):
    _only_type_or_value_errors(lambda: ENTRY_POINTS[entry_point](model, value))
