"""The sampling settings are defined once (csrc/gptj/sampling_settings.h) and everything that
takes them -- SamplingParams, Session.generate, the sampler's range checks -- follows that record."""

from __future__ import annotations

import dataclasses
import inspect
import math
import pickle

import pytest

from gptj_ggml import GREEDY, Model, SamplingParams
from gptj_ggml.sampling import FIELDS, SETTINGS

# The defaults users of llama.cpp (and, for the penalties, of the OpenAI API) expect.
EXPECTED_DEFAULTS = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "typical_p": 1.0,
    "repeat_penalty": 1.0,
    "repeat_last_n": 64,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


def test_the_defaults_are_llama_cpps():
    assert {name: SamplingParams().settings()[name] for name in EXPECTED_DEFAULTS} == EXPECTED_DEFAULTS


def test_sampling_params_has_a_field_per_setting_and_logit_bias():
    assert [f.name for f in dataclasses.fields(SamplingParams)] == [s.name for s in SETTINGS] + ["logit_bias"]
    assert FIELDS == (*(s.name for s in SETTINGS), "logit_bias")


def test_every_setting_has_a_type_a_range_holding_its_default_and_help():
    for s in SETTINGS:
        assert s.type in (int, float) and isinstance(s.default, s.type), s.name
        assert s.low <= s.default <= s.high, s.name
        assert s.help and "\n" not in s.help, s.name
        assert s.name in SamplingParams.__doc__


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_values_just_outside_the_range_raise_value_error_naming_the_setting(setting):
    outside = []
    if not math.isinf(setting.low):
        outside.append(setting.low if not setting.low_inclusive else setting.low - 1)
    if not math.isinf(setting.high):
        outside.append(setting.high if not setting.high_inclusive else setting.high + 1)
    outside.append(math.nan if setting.type is float else 2**40)
    for value in outside:
        with pytest.raises(ValueError, match=setting.name):
            SamplingParams(**{setting.name: value})


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_the_ends_of_each_range_that_are_allowed_are_accepted(setting):
    for end, inclusive in ((setting.low, setting.low_inclusive), (setting.high, setting.high_inclusive)):
        if inclusive and not math.isinf(end):
            assert SamplingParams(**{setting.name: setting.type(end)}).settings()[setting.name] == end


def test_non_numbers_raise_type_error():
    with pytest.raises(TypeError, match="temperature must be a number, got bool"):
        SamplingParams(temperature=True)
    with pytest.raises(TypeError, match="top_k must be a number, got str"):
        SamplingParams(top_k="40")
    with pytest.raises(ValueError, match="top_k must be an integer"):
        SamplingParams(top_k=2.5)


def test_replace_checks_names_and_values():
    assert SamplingParams().replace(top_k=5).top_k == 5
    with pytest.raises(TypeError, match="did you mean 'top_k'"):
        SamplingParams().replace(topk=5)
    with pytest.raises(ValueError, match="min_p"):
        SamplingParams().replace(min_p=1.5)


def test_greedy_is_temperature_zero_with_every_other_default():
    assert GREEDY == SamplingParams(temperature=0.0)


def test_sampling_params_survive_pickling():  # what process pools and Ray replicas need
    params = SamplingParams(top_k=7, logit_bias={3: -1.0})
    assert pickle.loads(pickle.dumps(params)) == params


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f32"))


def test_generate_takes_every_setting_as_a_keyword(model):
    signature = inspect.signature(model.generate)
    assert set(FIELDS) <= set(signature.parameters)
    for s in SETTINGS:  # each one reaches the sampler: a value out of range is refused by name
        with pytest.raises(ValueError, match=s.name):
            model.generate("x", **{s.name: math.nan if s.type is float else -(2**40)})


def test_generate_rejects_an_unknown_keyword_with_a_suggestion(model):
    with pytest.raises(TypeError, match="did you mean 'top_p'"):
        model.generate("x", topp=0.5)


def test_keywords_override_the_sampling_argument(model):
    params = SamplingParams(temperature=1.3, top_k=3)
    by_object = model.complete([1, 2, 3], sampling=params.replace(top_k=1), max_tokens=8, seed=1).tokens
    by_override = model.complete([1, 2, 3], sampling=params, top_k=1, max_tokens=8, seed=1).tokens
    greedy = model.complete([1, 2, 3], temperature=0, max_tokens=8).tokens
    assert by_object == by_override == greedy  # top_k=1 is greedy at any temperature
