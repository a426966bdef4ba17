"""The VNNI prompt GEMM (csrc/gptj/kernels/gemm_vnni): prompt batches of q8_0, q4_0 and q4_K weights by
8-bit integer dot products, the activations rounded to 8 bits per block of 32, against
transformers and against our f32 GEMM. It runs where the CPU has AVX512-VNNI; AMX is turned off
here so that an AMX machine runs it too."""

from __future__ import annotations

import numpy as np
import pytest

from gptj_ggml import Model
from gptj_ggml._native import core

from model_fixtures import reference_logits

pytestmark = pytest.mark.skipif(not core.vnni_gemm_available(), reason="this CPU has no AVX512-VNNI")

TINY = {
    "fmt": "safetensors",
    "n_embd": 256,
    "n_head": 4,
    "rotary_dim": 16,
    "n_inner": 1024,
    "n_layer": 2,
    "n_positions": 1024,
}
# fc_out with k = 776 (not a multiple of 32: the converter leaves it f16, so that model mixes the
# VNNI and f32 GEMMs in one prompt); n_embd 288: rows of 9 blocks of 32.
SHAPES = {"whole_blocks": TINY, "odd_inner": {**TINY, "n_inner": 776}, "odd_embd": {**TINY, "n_embd": 288, "n_head": 4}}
# 17 tokens and up go to a prompt GEMM; 100 is two 48-token tiles and a partial one (16 + 4 padded
# lanes); at 700 a k block (packed activations within half an L2) spans 736 weights: fc_out's
# k = 1024 is cut into 736 + 288.
PROMPTS = [17, 40, 100, 700]


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def prompt_logits(path, ids, *, kernel: str, threads: int = 2) -> np.ndarray:
    """kernel: "vnni" (ours), "f32" (our f32 GEMM: VNNI and bf16 off) or "ggml" (ggml_mul_mat)."""
    core.set_amx_enabled(False)
    core.set_vnni_gemm_enabled(kernel == "vnni")
    core.set_bf16_gemm_enabled(False)
    core.set_batch_matmul_enabled(kernel != "ggml")
    try:
        model = Model(path, n_threads=threads, n_ctx=1024, repack=False)
        return np.concatenate([model.logits(ids[:n]) for n in PROMPTS])
    finally:
        core.set_batch_matmul_enabled(True)
        core.set_bf16_gemm_enabled(True)
        core.set_vnni_gemm_enabled(True)
        core.set_amx_enabled(True)


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K"])
@pytest.mark.parametrize("shapes", SHAPES)
def test_prompts_match_transformers_as_well_as_ggmls_own_product(outtype, shapes, tiny_model_path, hf_model):
    ids = np.random.default_rng(len(shapes)).integers(0, 50400, max(PROMPTS)).tolist()
    reference = reference_logits(hf_model(**SHAPES[shapes]), ids)
    expected = np.concatenate([reference[:n] for n in PROMPTS])
    path = tiny_model_path(outtype, **SHAPES[shapes])

    ours = prompt_logits(path, ids, kernel="vnni")
    f32_gemm = prompt_logits(path, ids, kernel="f32")
    assert not np.array_equal(ours, f32_gemm)  # the VNNI kernel ran
    error, f32_error = relative_error(ours, expected), relative_error(f32_gemm, expected)
    # ggml's own products round the activations to 8 bits too (per 32 for q8_0 / q4_0, per 256 for
    # q4_K): our error is theirs (measured 0.97-1.04x), and the rounding's cost over the f32 GEMM is
    # bounded.
    ggml_error = relative_error(prompt_logits(path, ids, kernel="ggml"), expected)
    assert error <= 1.1 * ggml_error + 1e-3, (error, ggml_error)
    assert error <= BOUND_OVER_F32[outtype] * f32_error + 1e-3, (error, f32_error)
    # Rows are split among threads, each computed alike: the thread count changes nothing.
    np.testing.assert_array_equal(ours, prompt_logits(path, ids, kernel="vnni", threads=1))


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K"])
def test_a_nan_activation_gives_nan_logits_not_numbers(outtype, tiny_model_path, tmp_path):
    """Rounding to integers must not turn a NaN activation into a plausible number: a NaN in the
    first layer's norm reaches only the products of its output (q, k, v, fc_in), all on this kernel
    for a 40-token prompt."""
    from gguf_edit import with_a_nan_activation

    path = with_a_nan_activation(tiny_model_path(outtype, **TINY), tmp_path / "nan.gguf", "blk.0.attn_norm.weight", 3)
    core.set_amx_enabled(False)
    try:
        assert np.isnan(Model(path, n_threads=2, repack=False).logits(list(range(40)))).all()
    finally:
        core.set_amx_enabled(True)


# Measured here (relative max error, VNNI GEMM / f32 GEMM, the three shapes): q8_0 1.95e-2 / 1.31e-2,
# 1.45e-2 / 1.01e-2 and 1.81e-2 / 1.25e-2 (1.42-1.49x: 8-bit activations on 8-bit weights); q4_0
# 0.186 / 0.185, 0.155 / 0.157 and 0.177 / 0.178, q4_K 0.165 / 0.164, 0.126 / 0.125 and 0.115 / 0.113
# (the 4-bit weights' error dominates).
BOUND_OVER_F32 = {"q8_0": 1.75, "q4_0": 1.1, "q4_K": 1.1}
