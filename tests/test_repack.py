"""Repacked weights (ggml's interleaved CPU layouts for quantized matrices) compute what the
memory-mapped weights compute."""

from __future__ import annotations

import numpy as np
import pytest

from gptj_ggml import Model
from gptj_ggml._native import core

from quant_fixtures import PROMPT

# ggml offers its x86 repacked layouts (q4_0, q4_K, iq4_nl, ...) on CPUs with AVX2.
HAS_REPACK = "REPACK" in core.cpu_features() and "AVX2" in core.cpu_features()


@pytest.mark.parametrize("outtype", ["q4_0", "q4_K", "iq4_nl"])
def test_repacked_weights_give_the_logits_of_mapped_weights(outtype, quant_model_path):
    path = quant_model_path(outtype, pure=True)
    repacked = Model(path, repack=True)
    # Where our kernel multiplies a type faster in the file's layout (q4_0 on AVX2 CPUs), it stays mapped.
    keeps_file_layout = core.keeps_file_layout(outtype)
    assert (repacked.repacked_bytes > 0) == (HAS_REPACK and not keeps_file_layout)
    ours = repacked.logits(PROMPT)
    # The AVX2 GEMM takes prompt batches of the mapped matrices but leaves the repacked ones to
    # ggml (matmul.cpp): there, ggml's kernels on both sides.
    core.set_batch_matmul_enabled(keeps_file_layout or core.batch_matmul_kernel() != "avx2")
    try:
        mapped = Model(path, repack=False)
        reference = mapped.logits(PROMPT)
    finally:
        core.set_batch_matmul_enabled(True)
    assert mapped.repacked_bytes == 0
    # The same weights; the repacked kernels quantize the activations of a batch in interleaved
    # groups and sum in another order, so the logits differ a little (measured: up to 0.9% of
    # the largest logit here), far below the quantization's own error against f16 (about 20%).
    assert np.abs(ours - reference).max() <= 2e-2 * np.abs(reference).max()
    assert np.abs(ours[0] - reference[0]).max() <= 1e-5 * np.abs(reference).max()  # one token: same sums
    assert (ours.argmax(-1) == reference.argmax(-1)).mean() >= 0.95


def test_repacked_greedy_generation_matches_mapped(quant_model_path):
    path = quant_model_path("q4_0", pure=True)

    def greedy(model: Model) -> list[int]:
        return [t.id for t in model.generate(PROMPT[:8], max_tokens=16, temperature=0, repeat_penalty=1.0)]

    assert greedy(Model(path, repack=True)) == greedy(Model(path, repack=False))


def test_float_models_are_not_repacked(quant_model_path):
    assert Model(quant_model_path("f16")).repacked_bytes == 0


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_0"])
def test_copied_weights_compute_exactly_what_mapped_weights_compute(outtype, quant_model_path):
    path = quant_model_path(outtype)
    copied, mapped = Model(path, mmap=False), Model(path, mmap=True)
    np.testing.assert_array_equal(copied.logits(PROMPT), mapped.logits(PROMPT))
