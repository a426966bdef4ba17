"""Flash attention and quantized KV caches: logits against transformers, and the same
behaviour as the plain f16 cache wherever the sessions' contract does not depend on it."""

from __future__ import annotations

import numpy as np
import pytest
from test_parity import F32_TOLERANCE, random_ids, relative_error

from gptj_ggml import Model

from model_fixtures import reference_greedy, reference_logits

# head_dim 32: a quantized cache quantizes each head's slice of a row in blocks of 32.
WIDE_HEADS = {"n_embd": 128, "n_head": 4, "rotary_dim": 16}

# Relative max logit error against transformers (f32 weights, so the cache and the attention
# kernel are the only sources). Measured on this model: flash f16 5.6e-4 (plain attention 4.7e-4),
# q8_0 3.8e-3, q4_0 5.1e-2; the quantized bounds at about 2-3x.
CACHE_TOLERANCE = {"f16": F32_TOLERANCE, "q8_0": 1e-2, "q4_0": 1e-1}


def assert_most_choices_agree(ours: np.ndarray, reference: np.ndarray) -> None:
    """The most likely token is the reference's at nearly every position (random weights make
    near-ties: measured 59 of 60 positions for f16 and q8_0, 58 for q4_0)."""
    assert (ours.argmax(-1) == reference.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("cache_type", ["f16", "q8_0", "q4_0"])
def test_flash_attention_logits_match_transformers(cache_type, tiny_model_path, hf_model):
    ids = random_ids(60, seed=11)
    model = Model(tiny_model_path("f32", **WIDE_HEADS), cache_type=cache_type, flash_attn=True, n_batch=16)
    ours = model.logits(ids)  # 4 batches: the mask covers cached positions and the new ones
    reference = reference_logits(hf_model(**WIDE_HEADS), ids)
    assert relative_error(ours, reference) <= CACHE_TOLERANCE[cache_type]
    assert_most_choices_agree(ours, reference)


def test_flash_attention_with_the_default_narrow_heads(tiny_model_path, hf_model):
    ids = random_ids(40, seed=12)
    ours = Model(tiny_model_path("f32"), flash_attn=True).logits(ids)
    assert relative_error(ours, reference_logits(hf_model(), ids)) <= F32_TOLERANCE


# q8_0 follows transformers' greedy choice for 24 tokens here, then parts at a near-tie; q4_0
# after 5 (its logits move by up to 5% of their scale).
@pytest.mark.parametrize(("cache_type", "n_tokens"), [("f16", 32), ("q8_0", 20)])
def test_greedy_generation_with_flash_attention_matches_transformers(cache_type, n_tokens, tiny_model_path, hf_model):
    prompt = random_ids(6, seed=13)
    model = Model(tiny_model_path("f32", **WIDE_HEADS), cache_type=cache_type, flash_attn=True)
    ours = [t.id for t in model.generate(prompt, max_tokens=n_tokens, temperature=0, repeat_penalty=1.0)]
    assert ours == reference_greedy(hf_model(**WIDE_HEADS), prompt, n_tokens)


def test_one_token_at_a_time_gives_the_prompt_batchs_logits(tiny_model_path):
    # Decode steps read the cache without a mask; a prompt batch masks: both must agree.
    model = Model(tiny_model_path("f32", **WIDE_HEADS), cache_type="q8_0")
    ids = random_ids(24, seed=14)
    batch = model.session().logits(ids)
    session = model.session()
    stepped = np.stack([session.evaluate([token]) for token in ids])
    # Measured 2.4e-4 of the logits' scale (the kernel takes another path for one query row;
    # q8_0's error against transformers is 3.8e-3).
    np.testing.assert_allclose(stepped, batch, atol=1e-3 * np.abs(batch).max())


def test_quantized_cache_is_smaller(tiny_model_path):
    path = tiny_model_path("f16", **WIDE_HEADS)
    sizes = {t: Model(path, cache_type=t, n_ctx=256).session().kv_cache_bytes for t in ("f16", "q8_0", "q4_0")}
    # Per 32 values: f16 64 bytes, q8_0 34, q4_0 18.
    assert sizes["q8_0"] == pytest.approx(sizes["f16"] * 34 / 64, rel=0.01)
    assert sizes["q4_0"] == pytest.approx(sizes["f16"] * 18 / 64, rel=0.01)


def test_session_reports_its_layout(tiny_model_path):
    model = Model(tiny_model_path("f16", **WIDE_HEADS))
    plain = model.session()
    assert (plain.cache_type, plain.flash_attn) == ("f16", False)
    quantized = model.session(cache_type="q8_0")
    assert (quantized.cache_type, quantized.flash_attn) == ("q8_0", True)
    assert model.session(flash_attn=True).flash_attn


def test_copies_between_layouts_are_refused(tiny_model_path):
    model = Model(tiny_model_path("f16", **WIDE_HEADS))
    source = model.session()
    source.evaluate(random_ids(8, seed=15))
    with pytest.raises(ValueError, match="cache_type"):
        model.session(cache_type="q8_0")._core.copy_from(source._core, 8)


def test_copy_of_a_flash_session_continues_like_the_source(tiny_model_path):
    model = Model(tiny_model_path("f32", **WIDE_HEADS), cache_type="q8_0")
    ids = random_ids(20, seed=16)
    source = model.session()
    source.evaluate(ids[:12])
    copy = model.session()
    copy._core.copy_from(source._core, 12)  # what generate_batch does for a shared prompt
    np.testing.assert_array_equal(copy.evaluate(ids[12:]), source.evaluate(ids[12:]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cache_type": "q5_0"}, ValueError, "cache_type must be one of f16, q8_0, q4_0"),
        ({"cache_type": 8}, ValueError, "cache_type must be one of"),
        ({"cache_type": "q8_0", "flash_attn": False}, ValueError, "needs flash_attn"),
        ({"flash_attn": "yes"}, TypeError, "flash_attn must be a bool"),
    ],
)
def test_bad_layouts_are_refused_before_loading(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        Model(tmp_path / "missing.gguf", **kwargs)  # the arguments are checked before the path


def test_quantized_cache_needs_heads_in_whole_blocks(tiny_model_path):
    model = Model(tiny_model_path("f16"))  # head_dim 16
    with pytest.raises(ValueError, match="multiple of 32, this model's is 16"):
        model.session(cache_type="q8_0")


def test_batched_decoding_of_quantized_sessions_gives_each_completion_alone(tiny_model_path):
    # The batch evaluator attends per sequence over each session's own layout; the shared
    # prompt is evaluated once and copied (copy_from of a q8_0 cache).
    model = Model(tiny_model_path("f32", **WIDE_HEADS), cache_type="q8_0", n_ctx=96, n_threads=1)
    prompts = ["Once upon a time", "Water is", "Water is"]
    greedy = {"max_tokens": 12, "temperature": 0.0, "ignore_eos": True}
    batched = [r.tokens for r in model.complete_batch(prompts, **greedy)]
    assert batched == [model.session().complete(p, **greedy).tokens for p in prompts]


def test_a_server_over_a_quantized_cache_answers_as_the_model_and_says_its_cache(tiny_model_path):
    from gptj_ggml.server import create_app

    from server_fixtures import running_server

    model = Model(tiny_model_path("f32", **WIDE_HEADS), cache_type="q8_0", n_ctx=96, n_threads=1)
    greedy = {"max_tokens": 10, "temperature": 0.0}
    with running_server(create_app(model, n_slots=2)) as server:
        props = server.http.get("/props").json()
        response = server.http.post("/v1/completions", json={"prompt": "Water is", "n": 2, **greedy}).json()

    assert (props["cache_type"], props["flash_attn"]) == ("q8_0", True)
    expected = model.session().complete("Water is", **greedy).text
    assert [choice["text"] for choice in response["choices"]] == [expected, expected]
