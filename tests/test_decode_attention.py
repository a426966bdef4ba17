"""Our single-token attention kernel (csrc/gptj/kernels/decode_attention.h) over flash-attention
caches (f16, q8_0, q4_0): a session stepping one token at a time matches transformers as closely
as ggml_flash_attn_ext does, across the kernel's blocks of positions and parts of a head."""

from __future__ import annotations

import numpy as np
import pytest
from test_flash_attention import CACHE_TOLERANCE
from test_parity import random_ids, relative_error

from gptj_ggml import Model, _core

from gguf_edit import rewrite_gguf
from model_fixtures import reference_logits

# Head sizes: 32 (parts of 32 values), 96 (one part of 64, one of 32) and GPT-J-6B's 256 (four of
# 64); f16's 16 takes parts of 8. 70 positions: two full blocks of 32 positions and a partial one,
# and scores four positions at a time with a tail of two.
SHAPES = {
    "head_dim 32": {"n_embd": 128, "n_head": 4, "rotary_dim": 16},
    "head_dim 96": {"n_embd": 192, "n_head": 2, "rotary_dim": 32},
    "head_dim 256": {"n_embd": 512, "n_head": 2, "rotary_dim": 64},
}
N_POSITIONS = 70


def one_token_at_a_time(model: Model, ids: list[int]) -> np.ndarray:
    session = model.session()
    return np.stack([session.evaluate([token]) for token in ids])


def test_the_kernel_is_on_where_the_cpu_has_avx2():
    assert _core.decode_attention_available()  # every CI machine and laptop this project targets


@pytest.mark.parametrize("cache_type", ["f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("shape", SHAPES)
def test_single_tokens_match_transformers_as_closely_as_ggml_does(cache_type, shape, tiny_model_path, hf_model):
    kwargs = SHAPES[shape]
    ids = random_ids(N_POSITIONS, seed=21)
    path = tiny_model_path("f32", **kwargs)
    reference = reference_logits(hf_model(**kwargs), ids)
    ours = one_token_at_a_time(Model(path, cache_type=cache_type, flash_attn=True, n_threads=2), ids)
    _core.set_decode_attention_enabled(False)
    try:
        ggmls = one_token_at_a_time(Model(path, cache_type=cache_type, flash_attn=True, n_threads=2), ids)
    finally:
        _core.set_decode_attention_enabled(True)
    assert not np.array_equal(ours, ggmls)  # two kernels ran
    # Both round the queries as ggml does for these keys (to f16, or to 8 bits per block of 32); ggml
    # also sums f16 values in f16. Measured (ours / ggml's, head_dim 32, 96, 256): f16 4.7e-4 /
    # 5.3e-4, 4.3e-4 / 5.1e-4, 3.5e-4 / 5.6e-4; q8_0 3.8e-3 / 3.8e-3, 3.5e-3 / 3.5e-3, 4.3e-3 /
    # 4.3e-3; q4_0 6.4e-2 / 6.4e-2, 4.8e-2 / 4.8e-2, 6.4e-2 / 6.4e-2 (the cache's rounding).
    assert relative_error(ours, reference) <= 1.1 * relative_error(ggmls, reference) + 1e-4
    assert relative_error(ours, reference) <= CACHE_TOLERANCE[cache_type]


def test_narrow_f16_heads(tiny_model_path, hf_model):
    ids = random_ids(N_POSITIONS, seed=22)
    ours = one_token_at_a_time(Model(tiny_model_path("f32"), flash_attn=True), ids)  # head_dim 16
    assert relative_error(ours, reference_logits(hf_model(), ids)) <= CACHE_TOLERANCE["f16"]


@pytest.mark.parametrize("cache_type", ["f16", "q8_0"])
def test_thread_counts_give_the_same_logits(cache_type, tiny_model_path):
    # Threads take whole heads (3 threads: 1, 1 and 2 of the 4): each head is computed alike,
    # whichever thread takes it.
    path = tiny_model_path("f32", **SHAPES["head_dim 32"])
    ids = random_ids(20, seed=23)
    runs = [one_token_at_a_time(Model(path, cache_type=cache_type, n_threads=n), ids) for n in (1, 2, 3)]
    for run in runs[1:]:
        np.testing.assert_array_equal(run, runs[0])


@pytest.mark.parametrize("cache_type", ["f16", "q8_0", "q4_0"])
def test_a_nan_query_reaches_the_logits(cache_type, tiny_model_path, tmp_path):
    # A NaN in one row of the first layer's query weights: only attention reads it (the MLP does
    # not), so finite logits would mean the kernel's softmax turned a NaN score into a number.
    def poison(name: str, data):
        if name != "blk.0.attn_q.weight":
            return data
        data = data.copy()
        data[3] = float("nan")
        return data

    path = rewrite_gguf(tiny_model_path("f32", **SHAPES["head_dim 32"]), tmp_path / "nan.gguf", change_tensor=poison)
    logits = one_token_at_a_time(Model(path, cache_type=cache_type, flash_attn=True), random_ids(6, seed=24))
    assert np.isnan(logits).all()
