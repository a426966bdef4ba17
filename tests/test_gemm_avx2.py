"""The AVX2 GEMM (csrc/gptj/kernels/gemm_avx2.cpp): prompt batches of more than 16 tokens on CPUs
with AVX2 and no AVX-512 (or capped by GPTJ_GGML_ISA=avx2), for every weight type.

Quantized weights are checked against transformers running the same weights dequantized (gguf-py's
dequantizers), so that any error beyond the f16 KV cache's rounding is the kernel's, not the
quantization's (in the file's layout). q4_0 and q4_K prompts take the int8 GEMM
(gemm_int8_avx2.cpp) unless it is switched off; its tests compare it with ggml's own products, which
round the activations the same way. Shapes leave partial tiles in every dimension: tokens (8 per
vector, 3 vectors per tile), rows (4 per micro-kernel, 96 per converted block), and k (256 per
block)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from gptj_ggml import Model
from gptj_ggml._native import core
from gptj_ggml.convert.hparams import GptjHparams
from gptj_ggml.convert.tensor_names import expected_tensors

from model_fixtures import reference_logits


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


pytestmark = pytest.mark.skipif(
    core.batch_matmul_kernel() != "avx2",
    reason="the AVX2 GEMM is not this process's prompt kernel: test_gemm_avx2_capped.py runs these under GPTJ_GGML_ISA=avx2",
)

# Dense types: n_embd 40 (5 vectors' worth of k, and q/k/v rows 40 = 10 micro-kernels, under one
# 96-row block), n_inner 602 (fc_in: 6 blocks of 96 rows and 26 more, the last micro-kernel of 2
# rows; fc_out: k = 602 in blocks of 256, 256 and 90, which is no multiple of 8).
DENSE_SHAPES = {"fmt": "safetensors", "n_embd": 40, "n_head": 2, "rotary_dim": 8, "n_inner": 602, "n_layer": 2}
# Quantized types: rows of whole q4_K super-blocks; n_inner 1280 = 5 k blocks for fc_out and
# 13 row blocks and a third for fc_in (and a partial block per thread at 2 and 3 threads).
QUANT_SHAPES = {"fmt": "safetensors", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_inner": 1280, "n_layer": 2}
# Just above the matrix-vector range (17), one whole tile (24), 2 + 2 vectors (26: a 3 + 1 split
# avoided), a partial last vector (41), and several tiles with a masked one (130).
N_TOKENS = [17, 24, 26, 41, 130]
# Relative max error against transformers float32 on the same (dequantized) weights: the f16 KV
# cache's rounding and a different summation order; f16/bf16 weights are exact in f32.
TOLERANCE = 1e-3


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def random_ids(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, 50400, n).tolist()


_ON_THE_FILES_WEIGHTS: dict[Path, object] = {}


def transformers_on_the_files_weights(hf, path: Path):
    """A copy of ``hf`` whose weights are the GGUF file's, dequantized to float32 (one per file)."""
    if path not in _ON_THE_FILES_WEIGHTS:
        _ON_THE_FILES_WEIGHTS[path] = _dequantized_copy(hf, path)
    return _ON_THE_FILES_WEIGHTS[path]


def _dequantized_copy(hf, path: Path):
    config = hf.config
    hparams = GptjHparams(
        name="reference",
        vocab_size=config.vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        rotary_dim=config.rotary_dim,
        n_inner=config.n_inner,
        layer_norm_epsilon=config.layer_norm_epsilon,
    )
    hf_names = {spec.gguf_name: spec.hf_name for spec in expected_tensors(hparams)}
    state = {}
    for tensor in gguf.GGUFReader(path).tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        shape = tuple(int(n) for n in reversed(tensor.shape))
        state[hf_names[tensor.name]] = torch.from_numpy(values.reshape(shape).copy())
    model = type(hf)(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(name.endswith(("attn.bias", "attn.masked_bias")) for name in missing)
    return model


def test_the_avx2_gemm_is_the_prompt_kernel_on_an_avx2_cpu_without_avx512():
    flags = cpu_flags()
    if "avx512f" not in flags:
        assert {"avx2", "fma", "f16c"} <= flags
    assert core.batch_matmul_kernel() == "avx2"


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("n_tokens", N_TOKENS)
def test_dense_prompts_match_transformers(outtype, n_tokens, tiny_model_path, hf_model):
    ids = random_ids(n_tokens, seed=100 + n_tokens)
    path = tiny_model_path(outtype, **DENSE_SHAPES)
    reference = reference_logits(transformers_on_the_files_weights(hf_model(**DENSE_SHAPES), path), ids)
    ours = Model(path).logits(ids)
    assert relative_error(ours, reference) <= TOLERANCE


@pytest.fixture
def f32_gemm_only():
    """The int8 GEMM off: q4_0 and q4_K prompts take the f32 GEMM too."""
    core.set_int8_gemm_avx2_enabled(False)
    yield
    core.set_int8_gemm_avx2_enabled(True)


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_K", "q5_0", "q6_K"])
@pytest.mark.parametrize("n_tokens", N_TOKENS)
def test_quantized_prompts_match_transformers_on_the_same_weights(
    outtype, n_tokens, tiny_model_path, hf_model, request
):
    # q8_0, q4_0, q4_K: our AVX2 loaders; q5_0, q6_K: ggml's scalar dequantizer feeding the GEMM.
    # (q4_0 and q4_K, and q8_0 with AVX-VNNI, take the int8 GEMM by default: tested below.)
    request.getfixturevalue("f32_gemm_only")
    ids = random_ids(n_tokens, seed=200 + n_tokens)
    path = tiny_model_path(outtype, **QUANT_SHAPES)
    reference = reference_logits(transformers_on_the_files_weights(hf_model(**QUANT_SHAPES), path), ids)
    ours = Model(path, repack=False).logits(ids)  # repacked, q4_0 and q4_K keep ggml's int8 GEMMs
    assert relative_error(ours, reference) <= TOLERANCE


# The int8 GEMM (gemm_int8_avx2): 250 tokens cut fc_out's k = 1280 into k blocks of 1024 and 256.
INT8_N_TOKENS = [*N_TOKENS, 250]


# q8_0 takes the int8 GEMM only with AVX-VNNI (its unsigned weights would saturate vpmaddubsw).
INT8_TYPES = [
    "q4_0",
    "q4_K",
    pytest.param(
        "q8_0", marks=pytest.mark.skipif(not core.int8_gemm_avx_vnni_available(), reason="this CPU has no AVX-VNNI")
    ),
]


@pytest.mark.parametrize("repack", [False, True])
@pytest.mark.parametrize("outtype", INT8_TYPES)
@pytest.mark.parametrize("n_tokens", INT8_N_TOKENS)
def test_int8_prompts_match_transformers_as_well_as_ggmls_own_product(
    outtype, n_tokens, repack, tiny_model_path, hf_model, request
):
    # Against transformers on the same weights, the error is the activations' rounding to 8 bits,
    # which ggml's own products make too (per 32 for q4_0, per 256 for q4_K). Repacked, q4_K's
    # prompts read the mapped file's copy.
    ids = random_ids(n_tokens, seed=300 + n_tokens)
    path = tiny_model_path(outtype, **QUANT_SHAPES)
    reference = reference_logits(transformers_on_the_files_weights(hf_model(**QUANT_SHAPES), path), ids)
    ours = Model(path, repack=repack).logits(ids)
    core.set_batch_matmul_enabled(False)
    try:
        ggml = Model(path, repack=repack).logits(ids)
    finally:
        core.set_batch_matmul_enabled(True)
    request.getfixturevalue("f32_gemm_only")
    f32 = Model(path, repack=repack).logits(ids)
    assert not np.array_equal(ours, f32)  # the int8 kernel ran
    error, ggml_error = relative_error(ours, reference), relative_error(ggml, reference)
    assert error <= 1.1 * ggml_error + 1e-3, (error, ggml_error)


@pytest.mark.skipif(not core.int8_gemm_avx_vnni_available(), reason="this CPU has no AVX-VNNI")
@pytest.mark.parametrize("outtype", ["q4_0", "q4_K"])
def test_avx_vnni_gives_the_vpmaddubsw_kernels_logits(outtype, tiny_model_path):
    # Both sum each block's products exactly (int16 pairs, or int32 by vpdpbusd), then scale them
    # alike: the logits are the same to the bit, and the tests above (run with AVX-VNNI where the
    # CPU has it) hold for the kernel AVX2 CPUs without it run.
    ids = random_ids(100, seed=15)
    path = tiny_model_path(outtype, **QUANT_SHAPES)
    with_vnni = Model(path, repack=False).logits(ids)
    core.set_int8_gemm_avx_vnni_enabled(False)
    try:
        without = Model(path, repack=False).logits(ids)
    finally:
        core.set_int8_gemm_avx_vnni_enabled(True)
    np.testing.assert_array_equal(with_vnni, without)


@pytest.mark.parametrize("outtype", INT8_TYPES)
def test_a_nan_activation_gives_nan_logits_not_numbers(outtype, tiny_model_path, tmp_path):
    # A NaN in the first layer's norm reaches only the products of its output (q, k, v, fc_in),
    # all on the int8 GEMM for a 40-token prompt: rounding must not make it a number.
    from gguf_edit import with_a_nan_activation

    path = with_a_nan_activation(
        tiny_model_path(outtype, **QUANT_SHAPES), tmp_path / "nan.gguf", "blk.0.attn_norm.weight", 3
    )
    assert np.isnan(Model(path, repack=False).logits(random_ids(40, seed=14))).all()


@pytest.fixture
def ggml_products_only():
    core.set_batch_matmul_enabled(False)
    yield
    core.set_batch_matmul_enabled(True)


# Between our f32 products and ggml's, which round the activations (to f16, or 8 bits per block).
AGREEMENT = {"f16": 1e-2, "q8_0": 3e-2, "q4_0": 3e-2, "q4_K": 3e-2}


@pytest.mark.parametrize("outtype", list(AGREEMENT))
def test_our_kernel_and_ggml_agree(outtype, tiny_model_path, request):
    ids = random_ids(70, seed=7)
    path = tiny_model_path(outtype, **QUANT_SHAPES)
    ours = Model(path, repack=False).logits(ids)
    request.getfixturevalue("ggml_products_only")
    ggml = Model(path, repack=False).logits(ids)
    assert not np.array_equal(ours, ggml)  # our kernel did run
    assert relative_error(ours, ggml) <= AGREEMENT[outtype]


@pytest.mark.parametrize("outtype", ["f32", *INT8_TYPES])  # the f32 and int8 GEMMs
def test_logits_do_not_depend_on_the_thread_count(outtype, tiny_model_path):
    # Each output is summed by one thread in a fixed order, however the rows are split.
    ids = random_ids(45, seed=12)
    path = tiny_model_path(outtype, **(DENSE_SHAPES if outtype == "f32" else QUANT_SHAPES))
    one = Model(path, n_threads=1, repack=False).logits(ids)
    for n_threads in (2, 3, 7):
        np.testing.assert_array_equal(Model(path, n_threads=n_threads, repack=False).logits(ids), one)
