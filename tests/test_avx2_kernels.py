"""Our AVX2 kernels for products of 1-16 tokens (generation, decode batches, prompt lookup):
matvec_avx2 (f32, f16, bf16) and matvec_int8_avx2 (q8_0, q4_0, q4_K), against transformers and
against ggml's own kernels. They run on CPUs with AVX2 but not AVX-512, so every check runs in a
child process with GPTJ_GGML_ISA=avx2: on an AVX-512 machine too, the AVX2 path is the one tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from model_fixtures import reference_logits

# k a multiple of 256 everywhere (whole q4_K super-blocks); and an fc_out with k = 776, a multiple
# of 8 but not of 16 (the dense kernel's scalar tail) nor of 32 (the converter leaves it f16 in
# the quantized files, so a quantized model mixes both kernels).
TINY = {"fmt": "safetensors", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_inner": 1024, "n_layer": 2}
SHAPES = {"whole_blocks": TINY, "odd_inner": {**TINY, "n_inner": 776}}
PROMPT = 11
DECODE = [1, 2, 3, 4, 5, 9, 16]
# Relative max error against transformers' float32: the f16 KV cache's rounding for f32 weights,
# then each type's own rounding (the int8 kernels also round the activations to 8 bits, as ggml's do;
# tests/test_int8_kernel.py's q8_0 bound).
# Measured here: f32 3.6e-4, f16 6.0e-4, bf16 3.6e-3, q8_0 1.6e-2, q4_0 0.156, q4_K 0.138 (ggml's kernels:
# 3.7e-4, 6.7e-4, 5.0e-3, 1.6e-2, 0.156, 0.138).
TOLERANCE = {
    "f32": 1e-3,
    "f16": 2e-3,
    "bf16": 1e-2,
    "q8_0": 4e-2,
    "q4_0": 2.5e-1,
    "q4_K": 2e-1,
    "q5_K": 1.5e-1,
    "q6_K": 1e-1,
}

PROBE = """
import json, sys
import numpy as np
from gptj_ggml import Model
from gptj_ggml._native import core
path, ids, prompt, sizes, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]

def decode_logits(threads, ours=True):
    core.set_batch_matmul_enabled(ours)
    try:
        # repack=False: what ggml repacks (where the type is not kept in the file's layout), ours
        # cannot multiply: only the file's layout.
        model = Model(path, n_threads=threads, repack=False)
        found = []
        for n in sizes:
            session = model.session(n_threads=threads)
            session.evaluate(ids[:prompt])
            found.append(session._core.evaluate(ids[prompt:prompt + n], True))  # a decode batch of n tokens
        return np.concatenate(found)
    finally:
        core.set_batch_matmul_enabled(True)

np.savez(out, ours=decode_logits(2), one_thread=decode_logits(1), ggml=decode_logits(2, ours=False))
print(json.dumps({"active": core.avx2_kernels_active(), "cap": core.isa_cap()}))
"""


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def run_avx2_probe(path, ids, out) -> dict:
    env = {**os.environ, "GPTJ_GGML_ISA": "avx2"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), json.dumps(ids), str(PROMPT), json.dumps(DECODE), str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_has_avx2() -> bool:
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "").split()
    return {"avx2", "fma", "f16c"} <= set(flags)


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q5_K", "q6_K"])
@pytest.mark.parametrize("shapes", SHAPES)
def test_decode_batches_match_transformers(outtype, shapes, tiny_model_path, hf_model, tmp_path):
    ids = np.random.default_rng(len(shapes)).integers(0, 50400, PROMPT + max(DECODE)).tolist()
    reference = reference_logits(hf_model(**SHAPES[shapes]), ids)
    expected = np.concatenate([reference[PROMPT : PROMPT + n] for n in DECODE])
    found = run_avx2_probe(tiny_model_path(outtype, **SHAPES[shapes]), ids, tmp_path / "logits.npz")
    logits = np.load(tmp_path / "logits.npz")

    assert found == {"active": sys.platform == "linux" and cpu_has_avx2(), "cap": "avx2"}
    error = relative_error(logits["ours"], expected)
    assert error <= TOLERANCE[outtype], error
    # Rows are split among threads, each row computed alike: the thread count changes nothing.
    np.testing.assert_array_equal(logits["ours"], logits["one_thread"])
    if found["active"]:
        # Not ggml's products (which would match bit for bit), and no further from transformers
        # than ggml's, which round f16 / bf16 activations to 16 bits and quantized ones to 8.
        assert not np.array_equal(logits["ours"], logits["ggml"])
        assert error <= 1.25 * relative_error(logits["ggml"], expected) + 1e-5, (
            error,
            relative_error(logits["ggml"], expected),
        )


NAN_PROBE = """
import sys
from gptj_ggml import EvaluationError, Model
try:
    Model(sys.argv[1], repack=False).complete([1, 2, 3], max_tokens=2)
except EvaluationError as e:
    print("EvaluationError:", e)
"""


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_0", "q4_K", "q5_K", "q6_K"])
def test_a_nan_activation_gives_nan_logits_not_numbers(outtype, quant_model_path, tmp_path):
    # The int8 kernels round activations to integers: a NaN must not become a plausible number.
    # The final norm's NaN reaches the output matrix (of the file's type: --pure) directly.
    from gguf_edit import with_a_nan_activation

    path = with_a_nan_activation(quant_model_path(outtype, pure=True), tmp_path / "nan.gguf")
    done = subprocess.run(
        [sys.executable, "-c", NAN_PROBE, str(path)],
        env={**os.environ, "GPTJ_GGML_ISA": "avx2"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "EvaluationError: " in done.stdout and "the model produced NaN logits" in done.stdout
