"""tests/test_gemm_avx2.py on a CPU with AVX-512: its tests need the AVX2 GEMM to be this process's
prompt kernel, which GPTJ_GGML_ISA (read once, at import) decides, so here they run in a child
pytest under GPTJ_GGML_ISA=avx2 -- every one of them, none skipped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gptj_ggml._native import core

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(core.batch_matmul_kernel() == "avx2", reason="the AVX2 GEMM is this process's: they ran in it")
@pytest.mark.skipif(not core.avx2_kernels_active() and core.batch_matmul_kernel() == "", reason="no AVX2 here")
def test_the_avx2_gemm_tests_pass_under_the_avx2_cap(tmp_path):
    env = {**os.environ, "GPTJ_GGML_ISA": "avx2"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "pytest"),
            str(HERE / "test_gemm_avx2.py"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
        cwd=HERE.parent,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "skipped" not in summary and re.search(r"\b\d+ passed\b", summary), summary
