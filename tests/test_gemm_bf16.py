"""The AVX512-BF16 GEMM (csrc/gptj/kernels/gemm_avx512_bf16): prompt batches of bf16 and quantized
weights with weights and activations rounded to bf16, against transformers and against our f32
GEMM. It runs where the CPU has AVX512-BF16 (Zen 4 and later, Intel since Cooper Lake); AMX and
the VNNI GEMM (which takes q8_0, q4_0 and q4_K prompts first) are turned off here so that every machine
with AVX512-BF16 runs it for every type."""

from __future__ import annotations

import numpy as np
import pytest

from gptj_ggml import Model
from gptj_ggml._native import core

from model_fixtures import reference_logits

pytestmark = pytest.mark.skipif(not core.bf16_gemm_available(), reason="this CPU has no AVX512-BF16")

# k a multiple of 256 (whole q4_K super-blocks); an fc_out with k = 776 (not a multiple of 32:
# the converter leaves it f16, so that model mixes the bf16 and f32 GEMMs in one prompt).
TINY = {"fmt": "safetensors", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_inner": 1024, "n_layer": 2}
SHAPES = {"whole_blocks": TINY, "odd_inner": {**TINY, "n_inner": 776}}
# 17 tokens and up go to a prompt GEMM; 100 is more than one 64-token tile with a partial one.
PROMPTS = [17, 40, 100]


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def prompt_logits(path, ids, *, bf16: bool, threads: int = 2) -> np.ndarray:
    core.set_amx_enabled(False)
    core.set_vnni_gemm_enabled(False)
    core.set_bf16_gemm_enabled(bf16)
    try:
        model = Model(path, n_threads=threads, repack=False)
        return np.concatenate([model.logits(ids[:n]) for n in PROMPTS])
    finally:
        core.set_bf16_gemm_enabled(True)
        core.set_vnni_gemm_enabled(True)
        core.set_amx_enabled(True)


@pytest.mark.parametrize("outtype", ["bf16", "q8_0", "q4_0", "q4_K"])
@pytest.mark.parametrize("shapes", SHAPES)
def test_prompts_match_transformers_about_as_well_as_the_f32_gemm(outtype, shapes, tiny_model_path, hf_model):
    ids = np.random.default_rng(len(shapes)).integers(0, 50400, max(PROMPTS)).tolist()
    reference = reference_logits(hf_model(**SHAPES[shapes]), ids)
    expected = np.concatenate([reference[:n] for n in PROMPTS])
    path = tiny_model_path(outtype, **SHAPES[shapes])

    ours = prompt_logits(path, ids, bf16=True)
    f32_gemm = prompt_logits(path, ids, bf16=False)
    assert not np.array_equal(ours, f32_gemm)  # the bf16 kernel ran
    # Rounding the activations to bf16 (2^-9) adds to the weights' own rounding (BOUND_OVER_F32).
    error, f32_error = relative_error(ours, expected), relative_error(f32_gemm, expected)
    assert error <= BOUND_OVER_F32[outtype] * f32_error + 1e-3, (error, f32_error)
    # Rows are split among threads, each computed alike: the thread count changes nothing.
    np.testing.assert_array_equal(ours, prompt_logits(path, ids, bf16=True, threads=1))


# Measured here (relative max error, bf16 GEMM / f32 GEMM, the two shapes): bf16 5.6e-3 / 3.8e-3 and
# 4.5e-3 / 3.5e-3; q8_0 1.19e-2 / 1.12e-2 and 1.12e-2 / 1.05e-2; q4_0 0.168 / 0.168 and 0.165 / 0.163;
# q4_K 0.141 / 0.141 and 0.125 / 0.125. transformers' own bfloat16 rounds the weights too.
BOUND_OVER_F32 = {"bf16": 2.0, "q8_0": 1.25, "q4_0": 1.1, "q4_K": 1.1}
