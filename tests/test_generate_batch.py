"""Model.generate_batch: several completions decoded together, each exactly what it is alone.

The reference is always the same completion generated alone on a fresh session
(``Session.generate``): the greedy tokens, the seeded samples (completion i with seed s + i), the
text cut at a stop string, the ends.
"""

from __future__ import annotations

import gc
import inspect

import pytest

from gptj_ggml import BatchGeneration, ContextFullError, Model, Session
from gptj_ggml.generate_arguments import check_generate_arguments

GREEDY = {"temperature": 0.0, "ignore_eos": True}
PROMPTS = ["Once upon a time", "The cat sat on", "Water is", "A"]


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return Model(tiny_model_path("f32"), n_ctx=96, n_threads=1)


def alone(model: Model, prompt, **options):
    return model.session().complete(prompt, **options)


def test_greedy_completions_of_different_prompts_are_each_what_it_is_alone(model):
    results = model.complete_batch(PROMPTS, max_tokens=12, **GREEDY)

    assert [r.tokens for r in results] == [alone(model, p, max_tokens=12, **GREEDY).tokens for p in PROMPTS]
    assert [r.text for r in results] == [alone(model, p, max_tokens=12, **GREEDY).text for p in PROMPTS]
    assert all(r.finish_reason == "length" for r in results)


def test_n_greedy_completions_of_one_prompt_each_equal_the_completion_alone(model):
    expected = alone(model, "Once upon a time", max_tokens=10, **GREEDY).tokens

    results = model.complete_batch("Once upon a time", n=3, max_tokens=10, **GREEDY)

    assert [r.tokens for r in results] == [expected] * 3


def test_completion_i_of_a_seeded_batch_samples_as_seed_plus_i_alone(model):
    batch = model.generate_batch(["Hello there", "Rivers flow"], n=2, max_tokens=10, seed=40, ignore_eos=True)
    results = batch.result()

    prompts = ["Hello there", "Hello there", "Rivers flow", "Rivers flow"]
    for i, (prompt, result) in enumerate(zip(prompts, results)):
        reference = alone(model, prompt, max_tokens=10, seed=40 + i, ignore_eos=True)
        assert result.seed == 40 + i and batch[i].seed == 40 + i
        assert (result.tokens, result.text) == (reference.tokens, reference.text)


def test_unseeded_completions_get_fresh_seeds_that_reproduce_them(model):
    results = model.complete_batch("Hello there", n=3, max_tokens=8, ignore_eos=True)

    assert len({r.seed for r in results}) == 3
    for result in results:
        assert result.tokens == alone(model, "Hello there", max_tokens=8, seed=result.seed, ignore_eos=True).tokens


def test_completions_are_indexed_prompt_by_prompt_and_their_tokens_interleave(model):
    batch = model.generate_batch(["Apples", "Bridges"], n=2, max_tokens=4, **GREEDY)

    pairs = list(batch)

    assert [c.prompt_index for c in batch.completions] == [0, 0, 1, 1] and len(batch) == 4
    indices = [index for index, _ in pairs]
    assert sorted(indices) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert indices[:4] != [0, 0, 0, 0]  # the tokens of a step come from every completion
    for i, completion in enumerate(batch.completions):
        assert [token.id for index, token in pairs if index == i] == completion.tokens


def test_a_shared_prompt_is_evaluated_once_and_copied(model):
    prompt = model.tokenize("The history of the transformer architecture")

    results = model.complete_batch([prompt], n=3, max_tokens=2, **GREEDY)

    assert [r.timings.prompt_tokens for r in results] == [len(prompt), 1, 1]
    assert [r.timings.reused_tokens for r in results] == [0, len(prompt) - 1, len(prompt) - 1]


def test_a_prompt_longer_than_n_batch_gives_the_tokens_it_gives_alone(tiny_model_path):
    model = Model(tiny_model_path("f32"), n_ctx=96, n_batch=8, n_threads=1)
    prompts = [list(range(1000, 1030)), list(range(2000, 2005)), list(range(3000, 3019))]

    results = model.complete_batch(prompts, n=2, max_tokens=6, **GREEDY)

    for i, result in enumerate(results):
        assert result.tokens == alone(model, prompts[i // 2], max_tokens=6, **GREEDY).tokens


def test_a_completion_that_meets_its_stop_string_leaves_and_the_others_go_on(model):
    texts = [alone(model, p, max_tokens=12, **GREEDY).text for p in PROMPTS[:2]]
    stop = texts[0][len(texts[0]) // 2 :][:3]  # a piece of the first completion's text only
    assert stop and stop not in texts[1]

    batch = model.generate_batch(PROMPTS[:2], max_tokens=12, stop=[stop], **GREEDY)
    results = batch.result()

    reference = [alone(model, p, max_tokens=12, stop=[stop], **GREEDY) for p in PROMPTS[:2]]
    assert [r.finish_reason for r in results] == ["stop", "length"]
    assert [(r.text, r.tokens) for r in results] == [(r.text, r.tokens) for r in reference]
    assert stop not in results[0].text


def test_end_of_text_ends_each_completion(model):
    eos = model.tokenizer.eos_id

    results = model.complete_batch(["One", "Two"], max_tokens=5, logit_bias={eos: 100.0})

    assert [(r.finish_reason, r.tokens) for r in results] == [("eos", []), ("eos", [])]


def test_logprobs_are_each_completions_own(model):
    results = model.complete_batch(PROMPTS[:2], max_tokens=5, top_logprobs=2, **GREEDY)

    for prompt, result in zip(PROMPTS[:2], results):
        reference = alone(model, prompt, max_tokens=5, top_logprobs=2, **GREEDY)
        assert result.logprobs == pytest.approx(reference.logprobs, abs=1e-4)


def test_a_completion_that_shifts_its_context_continues_as_it_does_alone(model):
    options = {"max_tokens": 120, "on_context_full": "shift", "n_keep": 2, **GREEDY}

    results = model.complete_batch(PROMPTS[:2], **options)

    assert [r.tokens for r in results] == [alone(model, p, **options).tokens for p in PROMPTS[:2]]


def test_a_full_context_with_policy_error_raises_naming_the_completion_after_its_tokens(tiny_model_path):
    model = Model(tiny_model_path("f32"), n_ctx=12, n_threads=1)
    prompts = [list(range(100, 110)), [7]]  # the first fills its context with 3 tokens
    batch = model.generate_batch(prompts, max_tokens=20, **GREEDY)
    seen = []

    with pytest.raises(ContextFullError, match=r"completion 0: the context is full"):
        for index, token in batch:
            seen.append(index)

    assert seen.count(0) == 3 and batch[0].tokens == alone(model, prompts[0], max_tokens=3, **GREEDY).tokens
    assert batch[1].finish_reason == "cancelled"


def test_policy_stop_ends_only_the_completion_whose_context_is_full(tiny_model_path):
    model = Model(tiny_model_path("f32"), n_ctx=12, n_threads=1)

    results = model.complete_batch([list(range(100, 110)), [7]], max_tokens=5, on_context_full="stop", **GREEDY)

    assert [(r.finish_reason, len(r.tokens)) for r in results] == [("context", 3), ("length", 5)]


# -- stopping early ------------------------------------------------------------------------------------


def test_cancelling_one_completion_leaves_the_others_running(model):
    batch = model.generate_batch(PROMPTS[:3], max_tokens=8, **GREEDY)
    for index, _ in batch:
        if index == 1:
            batch[1].cancel()
            break
    results = batch.result()

    assert [r.finish_reason for r in results] == ["length", "cancelled", "length"]
    assert len(results[1].tokens) == 1
    assert results[2].tokens == alone(model, PROMPTS[2], max_tokens=8, **GREEDY).tokens


def test_closing_the_batch_cancels_what_still_runs(model):
    with model.generate_batch(PROMPTS[:2], max_tokens=50, **GREEDY) as batch:
        next(batch)
        assert batch[0].finish_reason is None
    assert [c.finish_reason for c in batch.completions] == ["cancelled", "cancelled"]
    assert list(batch) == []


def test_is_cancelled_stops_every_completion_before_its_next_step(model):
    flag = {"set": False}
    batch = model.generate_batch(PROMPTS[:2], max_tokens=50, is_cancelled=lambda: flag["set"], **GREEDY)
    first = [next(batch) for _ in range(4)]  # two steps
    flag["set"] = True  # as another thread would set it

    rest = list(batch)

    assert len(first) == 4 and rest == []
    assert [(c.finish_reason, c.timings.generated_tokens) for c in batch.completions] == [("cancelled", 2)] * 2


def test_dropping_an_unfinished_batch_ends_its_completions_at_once(model):
    batch = model.generate_batch(PROMPTS[:2], max_tokens=50, **GREEDY)
    next(batch)
    completions = batch.completions

    del batch
    gc.disable()  # no garbage collection: nothing may wait for one
    try:
        assert [c.finish_reason for c in completions] == ["cancelled", "cancelled"]
    finally:
        gc.enable()


def test_a_completion_result_is_refused_while_it_runs(model):
    batch = model.generate_batch("Hi", max_tokens=5, **GREEDY)
    with pytest.raises(RuntimeError, match="completion 0 is still running"):
        batch[0].result()
    assert isinstance(batch, BatchGeneration) and "1 running" in repr(batch)
    batch.close()


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompts", "options", "error", "match"),
    [
        ([], {}, ValueError, "prompts is empty"),
        ([1, 2, 3], {}, TypeError, r"for one prompt of ids, pass \[ids\]"),
        (b"bytes", {}, TypeError, "prompts must be a list of prompts"),
        (["a", [1, 50400]], {}, ValueError, r"\(prompts\[1\]\[1\]\)"),
        (["a", [1, 2.5]], {}, TypeError, r"prompts\[1\]\[1\] must be an integer"),
        (["a", list(range(200))], {}, ValueError, r"prompts\[1\] has 200 tokens, more than n_ctx=96"),
        (["a"], {"n": 0}, ValueError, "n must be >= 1"),
        (["a"], {"n": 1.5}, TypeError, "n must be an integer"),
        (["a"], {"max_tokens": -1}, ValueError, "max_tokens must be >= 0"),
        (["a"], {"temprature": 0.5}, TypeError, "generate_batch()"),
        (["a"], {"logit_bias": {50400: 1.0}}, ValueError, "logit_bias"),
    ],
)
def test_bad_arguments_are_clear_errors_before_anything_runs(model, prompts, options, error, match):
    with pytest.raises(error, match=match):
        model.generate_batch(prompts, **options)


def test_a_context_too_small_to_generate_is_refused(tiny_model_path):
    model = Model(tiny_model_path("f32"), n_ctx=1)
    with pytest.raises(ValueError, match="the context is too small"):
        model.generate_batch(["a", "b"])


def test_a_sampler_failure_names_the_completion(model):
    everything_banned = {token: float("-inf") for token in range(model.n_vocab)}
    batch = model.generate_batch(["a", "b"], max_tokens=3, logit_bias=everything_banned)
    with pytest.raises(ValueError, match=r"completion 0: every token has a logit of -inf"):
        list(batch)
    assert [c.finish_reason for c in batch.completions] == ["cancelled", "cancelled"]


def test_generate_batch_takes_generates_options_with_generates_defaults():
    checked = inspect.signature(check_generate_arguments).parameters
    generate = inspect.signature(Session.generate).parameters
    options = [name for name, p in checked.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert options and all(generate[name].default == checked[name].default for name in options)
    assert set(options) <= set(inspect.signature(Model.generate_batch).parameters)
