"""GPTJ_GGML_ISA: capping the instruction sets our kernels use, so that one machine runs (and CI
tests) the paths a CPU with less would take. Each level runs in a fresh process (the cap is read
once), evaluating the same prompt, a single token and a decode batch, against transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_fixtures import reference_logits

# What each level may leave on: a cap never turns on what the CPU lacks.
PROBE = """
import json, sys
import numpy as np
from gptj_ggml import Model
from gptj_ggml._native import core
path, ids = sys.argv[1], json.loads(sys.argv[2])
model = Model(path, n_threads=1)
prompt = model.logits(ids)  # a prompt batch
session = model.session(n_threads=1)
session.evaluate(ids[:-4])
decode = session._core.evaluate(ids[-4:], True)  # a decode batch of 4 tokens
np.save(sys.argv[3], np.concatenate([prompt, decode]))
print(json.dumps({"cap": core.isa_cap(), "kernel": core.batch_matmul_kernel(), "amx": core.amx_available(),
                  "bf16": core.bf16_gemm_available(), "int8": core.int8_matvec_available(),
                  "vnni_gemm": core.vnni_gemm_available(), "int8_gemm_avx2": core.int8_gemm_avx2_available(),
                  "decode_attention": core.decode_attention_available(),
                  "int8_gemm_avx_vnni": core.int8_gemm_avx_vnni_available()}))
"""


def run_probe(level: str | None, path, ids, out) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GPTJ_GGML_ISA"}
    if level is not None:
        env["GPTJ_GGML_ISA"] = level
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), json.dumps(ids), str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_every_level_evaluates_what_transformers_does(outtype, tiny_model_path, hf_model, tmp_path):
    ids = np.random.default_rng(5).integers(0, 50400, 24).tolist()
    path = tiny_model_path(outtype)
    reference = reference_logits(hf_model(), ids)
    expected = np.concatenate([reference, reference[-4:]])
    # f32 weights: the f16 KV cache's rounding; q8_0: the weights' own (tests/test_int8_kernel.py's bound).
    bound = 1e-3 if outtype == "f32" else 4e-2
    found = {}
    for level in [None, "amx", "avx512bf16", "avx512", "avx2"]:
        out = tmp_path / f"{level}.npy"
        found[level] = run_probe(level, path, ids, out)
        ours = np.load(out)
        error = float(np.abs(ours - expected).max() / np.abs(expected).max())
        assert error <= bound, (level, error)

    assert found[None]["cap"] == found["amx"]["cap"] == "amx"
    assert found["avx512bf16"] == {**found[None], "cap": "avx512bf16", "amx": False}
    assert found["avx512"] == {**found[None], "cap": "avx512", "amx": False, "bf16": False}
    # Capped at AVX2, prompt batches take the AVX2 GEMM (every x86-64 CPU this runs on has AVX2).
    assert found["avx2"] == {
        "cap": "avx2",
        "kernel": "avx2",
        "amx": False,
        "bf16": False,
        "int8": False,
        "vnni_gemm": False,
        "int8_gemm_avx2": True,
        "decode_attention": True,  # an AVX2 kernel: on at every level
        "int8_gemm_avx_vnni": " avx_vnni" in Path("/proc/cpuinfo").read_text(),  # as on a laptop with it
    }
    assert not found[None]["int8_gemm_avx2"] or found[None]["kernel"] == "avx2"
    assert found[None]["decode_attention"]


def test_an_unknown_level_is_an_error_naming_the_variable(tmp_path):
    env = {**os.environ, "GPTJ_GGML_ISA": "avx9000"}
    done = subprocess.run(
        [sys.executable, "-c", "import gptj_ggml._native"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode != 0
    assert "GPTJ_GGML_ISA=avx9000 is not an instruction set level: use avx2, avx512, avx512bf16 or amx" in done.stderr


def test_info_shows_the_cap():
    env = {**os.environ, "GPTJ_GGML_ISA": "avx2"}
    done = subprocess.run(
        [sys.executable, "-m", "gptj_ggml", "info", "--system"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "GPTJ_GGML_ISA=avx2" in done.stdout and "matrix kernels: gptj_ggml's AVX2" in done.stdout
