"""``python -m gptj_ggml convert``: writes the file, or prints one error line and exits 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gguf

PYTHON_DIR = Path(__file__).resolve().parent.parent / "python"


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PYTHON_DIR), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "gptj_ggml", *args], capture_output=True, text=True, env=env, check=False)


def test_convert_writes_a_gguf(tiny_gptj_dir, tmp_path):
    out = tmp_path / "model.gguf"
    result = _run_cli("convert", str(tiny_gptj_dir(fmt="bin-f16")), "-o", str(out), "--outtype", "f32")

    assert result.returncode == 0, result.stderr
    assert len(gguf.GGUFReader(out).tensors) == 25


def test_convert_error_is_one_line_and_exit_code_1(tmp_path):
    result = _run_cli("convert", str(tmp_path), "-o", str(tmp_path / "model.gguf"))

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    expected = f"error: {tmp_path / 'config.json'}: missing (a Hugging Face checkpoint folder needs its config.json)"
    assert result.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "model.gguf").exists()
