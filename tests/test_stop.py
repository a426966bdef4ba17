"""Stop strings: generation ends before them, and no part of one is ever yielded."""

from __future__ import annotations

import pytest

from gptj_ggml import Model
from gptj_ggml.stop import StopStrings

GREEDY_ARGS = {"temperature": 0.0, "repeat_penalty": 1.0}
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f16"))


@pytest.fixture(scope="module")
def free_run(model):
    """The greedy continuation with no stop strings: 24 tokens and their texts."""
    return list(model.generate(PROMPT, max_tokens=24, **GREEDY_ARGS))


def test_safe_length_holds_back_a_tail_that_starts_a_stop_string():
    stops = StopStrings(["END", "\n\n"])
    assert stops.safe_length("hello EN") == len("hello ")
    assert stops.safe_length("hello\n") == len("hello")
    assert stops.safe_length("hello E!") == len("hello E!")
    assert stops.find("abc\n\nENDx") == 3 and stops.find("abc") == -1


def spanning_stop(tokens, first: int) -> str:
    """A stop string made of the end of token `first` and the start of the two after it."""
    a, b, c = (tokens[first + i].text for i in range(3))
    return a[-2:] + b + c[:2]


def test_a_stop_string_spanning_tokens_ends_the_text_before_it(model, free_run):
    full = "".join(t.text for t in free_run)
    stop = spanning_stop(free_run, 5)
    generation = model.generate(PROMPT, max_tokens=24, stop=[stop], **GREEDY_ARGS)
    texts = [t.text for t in generation]
    assert generation.finish_reason == "stop"
    assert "".join(texts) == full[: full.index(stop)]
    assert generation.text == "".join(texts)


def test_no_part_of_the_stop_string_is_ever_yielded(model, free_run):
    full = "".join(t.text for t in free_run)
    stop = spanning_stop(free_run, 8)
    before_stop = full[: full.index(stop)]
    yielded = ""
    for token in model.generate(PROMPT, max_tokens=24, stop=[stop], **GREEDY_ARGS):
        yielded += token.text
        assert before_stop.startswith(yielded)  # never a character past the cut, at any moment
    assert yielded == before_stop


def test_the_first_of_several_stop_strings_wins(model, free_run):
    full = "".join(t.text for t in free_run)
    early, late = spanning_stop(free_run, 3), spanning_stop(free_run, 10)
    result = model.complete(PROMPT, max_tokens=24, stop=[late, early], **GREEDY_ARGS)
    assert result.text == full[: full.index(early)] and result.finish_reason == "stop"


def test_a_stop_string_that_never_completes_releases_everything_at_the_end(model, free_run):
    full = "".join(t.text for t in free_run)
    never = spanning_stop(free_run, 20) + "\x00"  # its start matches the last tokens, its end never comes
    result = model.complete(PROMPT, max_tokens=24, stop=never, **GREEDY_ARGS)
    assert result.text == full and result.finish_reason == "length"
    assert result.tokens == [t.id for t in free_run]


def test_held_back_text_waits_for_the_next_token(model, free_run):
    # A stop string that starts like token 6's text: token 6 is held until token 7 shows
    # that the stop string does not follow.
    decoy = free_run[6].text + "\x00"
    generation = model.generate(PROMPT, max_tokens=24, stop=decoy, **GREEDY_ARGS)
    for expected in free_run[:7]:
        assert next(generation).id == expected.id
    assert generation.timings.generated_tokens == 8


def test_a_stop_string_at_the_very_start_yields_nothing(model, free_run):
    result = model.complete(PROMPT, max_tokens=24, stop=free_run[0].text[:3], **GREEDY_ARGS)
    assert result.text == "" and result.tokens == [] and result.finish_reason == "stop"
