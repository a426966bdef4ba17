"""Prompt batches of 8+ tokens with f32/f16/bf16 weights go through our AVX-512 kernel (where the
CPU has AVX-512), single tokens and quantized weights through ggml's: both must match
transformers, including at shapes that leave partial register tiles in every dimension."""

from __future__ import annotations

import numpy as np
import pytest

from gptj_ggml import Model
from gptj_ggml._native import core

from model_fixtures import reference_logits

# n_embd and n_inner not multiples of 16 (the kernel's vector width) nor of 6 (its row block);
# prompt lengths below, at and above one 64-token tile, with partial vectors.
ODD_SHAPES = {"fmt": "safetensors", "n_embd": 40, "n_head": 2, "rotary_dim": 8, "n_inner": 100, "n_layer": 2}
TOLERANCE = {"f32": 1e-3, "f16": 2e-2, "bf16": 5e-2}
# Between two f32 computations of the same model (see test_our_kernel_and_ggml_agree).
F32_REORDERED = 2e-4


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def random_ids(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, 50400, n).tolist()


@pytest.fixture
def ggml_products_only():
    core.set_batch_matmul_enabled(False)
    yield
    core.set_batch_matmul_enabled(True)


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("n_tokens", [8, 12, 16, 17, 70])
def test_batched_logits_match_transformers_at_odd_shapes(outtype, n_tokens, tiny_model_path, hf_model):
    ids = random_ids(n_tokens, seed=n_tokens)
    ours = Model(tiny_model_path(outtype, **ODD_SHAPES)).logits(ids)
    reference = reference_logits(hf_model(**ODD_SHAPES), ids)
    assert relative_error(ours, reference) <= TOLERANCE[outtype]
    if outtype == "f32":
        np.testing.assert_array_equal(ours.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_our_kernel_and_ggml_agree(outtype, tiny_model_path, request):
    ids = random_ids(33, seed=7)
    path = tiny_model_path(outtype, **ODD_SHAPES)
    ours = Model(path).logits(ids)
    request.getfixturevalue("ggml_products_only")
    ggml = Model(path).logits(ids)
    # f32: the same products summed in another order, then keys and values rounded to the f16
    # cache (a last-bit difference can round either way); f16: ggml also rounds the activations.
    assert relative_error(ours, ggml) <= {"f32": F32_REORDERED, "f16": 1e-2}[outtype]


def test_batch_and_token_by_token_give_the_same_next_token_logits(tiny_model_path):
    ids = random_ids(24, seed=11)
    model = Model(tiny_model_path("f32", **ODD_SHAPES))
    batched = model.logits(ids)
    session = model.session()
    stepwise = np.stack([session.evaluate([token]) for token in ids])
    assert relative_error(batched, stepwise) <= F32_REORDERED


def test_the_kernel_can_be_switched_off_and_on(tiny_model_path, ggml_products_only):
    assert core.batch_matmul_kernel() in ("avx512", "avx2", "")
    ids = random_ids(20, seed=3)  # a prompt batch for every GEMM (the AVX2 one takes more than 16 tokens)
    model = Model(tiny_model_path("f32", **ODD_SHAPES))
    off = model.logits(ids)
    core.set_batch_matmul_enabled(True)
    on = model.logits(ids)
    assert relative_error(on, off) <= F32_REORDERED
    assert not np.array_equal(on, off) or core.batch_matmul_kernel() == ""


# q4_0 and q4_K matrices are repacked by ggml on x86 (its interleaved layouts); q8_0 is not, nor q4_0
# where our AVX2 kernel multiplies it faster in the file's layout (core.keeps_file_layout).
# n_embd 256: whole q4_K super-blocks. n_inner 776: 129 blocks of 6 rows and a remainder.
QUANT_SHAPES = {"fmt": "safetensors", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_inner": 776, "n_layer": 2}


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K"])
def test_quantized_batches_read_the_file_layout_when_ggml_repacked(outtype, tiny_model_path):
    ids = random_ids(20, seed=5)
    path = tiny_model_path(outtype, **QUANT_SHAPES)
    repacked = Model(path, repack=True)
    plain = Model(path, repack=False)
    if outtype != "q8_0" and not core.keeps_file_layout(outtype):
        assert repacked.repacked_bytes > 0
    if core.batch_matmul_kernel() == "avx512":
        # Our kernel reads the same file bytes either way: the same logits, bit for bit. (The AVX2
        # GEMM leaves repacked matrices to ggml's int8 kernels: matmul.cpp.)
        np.testing.assert_array_equal(repacked.logits(ids), plain.logits(ids))
    else:
        # ggml's int8 kernels on the repacked copy (activations rounded to 8 bits) against ggml's, or
        # the AVX2 GEMM's f32 products, on the file layout (test_quantized_batch_and_token_by_token_agree's
        # bound; AVX2 GEMM, q4_K: 1.2e-2 measured).
        assert relative_error(repacked.logits(ids), plain.logits(ids)) <= 3e-2


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K"])
def test_quantized_batch_and_token_by_token_agree(outtype, tiny_model_path):
    ids = random_ids(20, seed=6)
    model = Model(tiny_model_path(outtype, **QUANT_SHAPES))
    batched = model.logits(ids)
    session = model.session()
    stepwise = np.stack([session.evaluate([token]) for token in ids])
    # ggml's single-token kernels round the activations to 8 bits (q8_0 / q8_K); ours keep f32.
    assert relative_error(batched, stepwise) <= 3e-2  # measured 0.9-1.3e-2


# Multiples of 32 in k and m: shapes the AMX kernel takes (where the CPU has AMX).
AMX_SHAPES = {"fmt": "safetensors", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_inner": 1024, "n_layer": 2}
# Relative max error against transformers' float32, measured with AMX here (f16 splits both
# operands into hi + lo bf16 halves, the others round activations to bf16): f16 7e-4,
# bf16 6e-3, q8_0 1.5e-2 (ggml: 8.7e-4, 5.6e-3, 2.0e-2).
AMX_TOLERANCE = {"f16": 2e-3, "bf16": 2e-2, "q8_0": 4e-2}


@pytest.fixture
def amx_off():
    core.set_amx_enabled(False)
    yield
    core.set_amx_enabled(True)


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
@pytest.mark.parametrize("n_tokens", [16, 45, 130])
def test_amx_sized_batches_match_transformers(outtype, n_tokens, tiny_model_path, hf_model):
    ids = random_ids(n_tokens, seed=n_tokens + 1)
    ours = Model(tiny_model_path(outtype, **AMX_SHAPES)).logits(ids)
    reference = reference_logits(hf_model(**AMX_SHAPES), ids)
    assert relative_error(ours, reference) <= AMX_TOLERANCE[outtype]


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_amx_and_the_f32_kernel_agree(outtype, tiny_model_path, request):
    ids = random_ids(40, seed=9)
    path = tiny_model_path(outtype, **AMX_SHAPES)
    with_amx = Model(path).logits(ids)
    request.getfixturevalue("amx_off")
    without = Model(path).logits(ids)
    # f16: hi + lo halves keep f32-like accuracy; q8_0: activations rounded to bf16.
    assert relative_error(with_amx, without) <= {"f16": 1e-3, "q8_0": 2e-2}[outtype]
    if core.amx_available():
        assert not np.array_equal(with_amx, without)  # the AMX kernel did run


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_0"])
def test_logits_do_not_depend_on_the_thread_count(outtype, tiny_model_path):
    # Each output of our kernels is summed by one thread in a fixed order, whatever the split.
    ids = random_ids(70, seed=12)
    path = tiny_model_path(outtype, **AMX_SHAPES)
    one = Model(path, n_threads=1).logits(ids)
    for n_threads in (2, 3, 5):
        np.testing.assert_array_equal(Model(path, n_threads=n_threads).logits(ids), one)
