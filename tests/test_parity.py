"""Logits and greedy tokens match Hugging Face transformers, the reference implementation."""

from __future__ import annotations

import numpy as np
import pytest

from gptj_ggml import Model

from model_fixtures import reference_greedy, reference_logits

# Relative max error: max |ours - reference| / max |reference|. f32 weights still go through
# an f16 KV cache (as ggml's example and llama.cpp do), hence not 1e-6.
F32_TOLERANCE = 1e-3
F16_TOLERANCE = 2e-2


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def random_ids(n: int, seed: int = 0, n_vocab: int = 50400) -> list[int]:
    return np.random.default_rng(seed).integers(0, n_vocab, n).tolist()


@pytest.mark.parametrize(
    "checkpoint",
    [
        {"fmt": "safetensors"},
        {"fmt": "sharded-safetensors"},
        {"fmt": "bin-f16"},
        {"fmt": "safetensors", "rotary_dim": 16},  # rotary over the whole head (16 dims)
        {"fmt": "safetensors", "n_embd": 96, "n_head": 3, "rotary_dim": 16, "n_layer": 3},
    ],
    ids=["safetensors", "sharded", "bin-f16", "full-rotary", "3-heads-3-layers"],
)
def test_f32_logits_match_transformers(checkpoint, tiny_model_path, hf_model):
    ids = random_ids(40)
    model = Model(tiny_model_path("f32", **checkpoint))
    ours = model.logits(ids)
    reference = reference_logits(hf_model(**checkpoint), ids)
    assert ours.shape == (len(ids), model.n_vocab) and ours.dtype == np.float32
    assert relative_error(ours, reference) <= F32_TOLERANCE
    np.testing.assert_array_equal(ours.argmax(-1), reference.argmax(-1))


def test_f16_logits_match_transformers(tiny_model_path, hf_model):
    ids = random_ids(40, seed=1)
    ours = Model(tiny_model_path("f16")).logits(ids)
    assert relative_error(ours, reference_logits(hf_model(), ids)) <= F16_TOLERANCE


def test_prompt_longer_than_batch_gives_the_same_logits(tiny_model_path, hf_model):
    ids = random_ids(50, seed=2)
    model = Model(tiny_model_path("f32"), n_batch=16)  # 4 batches, the last one partial
    assert relative_error(model.logits(ids), reference_logits(hf_model(), ids)) <= F32_TOLERANCE


def test_logits_start_from_an_empty_context_every_call(tiny_model_path):
    model = Model(tiny_model_path("f32"))
    first = model.logits(random_ids(12, seed=3))
    model.logits(random_ids(30, seed=4))
    np.testing.assert_array_equal(model.logits(random_ids(12, seed=3)), first)


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_greedy_generation_matches_transformers(outtype, tiny_model_path, hf_model):
    prompt = random_ids(6, seed=5)
    model = Model(tiny_model_path(outtype))
    ours = [token.id for token in model.generate(prompt, max_tokens=32, temperature=0, repeat_penalty=1.0)]
    assert ours == reference_greedy(hf_model(), prompt, 32)


def test_greedy_generation_from_text_matches_transformers(tiny_model_path, hf_model):
    model = Model(tiny_model_path("f32"), n_batch=4)
    prompt = "GPT-J runs on a laptop, with ggml."
    ids = model.tokenize(prompt)
    ours = [token.id for token in model.generate(prompt, max_tokens=32, temperature=0, repeat_penalty=1.0)]
    assert ours == reference_greedy(hf_model(), ids, 32)


def test_greedy_generation_with_repetition_penalty_matches_transformers(tiny_model_path, hf_model):
    # transformers penalizes every earlier token (prompt included): repeat_last_n=-1.
    prompt = random_ids(6, seed=6)
    model = Model(tiny_model_path("f32"))
    ours = [t.id for t in model.generate(prompt, max_tokens=24, temperature=0, repeat_penalty=1.5, repeat_last_n=-1)]
    assert ours == reference_greedy(hf_model(), prompt, 24, repetition_penalty=1.5)


def test_temperature_zero_with_the_other_defaults_is_transformers_greedy(tiny_model_path, hf_model):
    # What a new user tries first: only temperature=0, every other setting at its default.
    prompt = random_ids(6, seed=7)
    model = Model(tiny_model_path("f32"))
    ours = [token.id for token in model.generate(prompt, max_tokens=24, temperature=0)]
    assert ours == reference_greedy(hf_model(), prompt, 24)
