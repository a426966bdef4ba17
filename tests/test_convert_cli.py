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


def test_convert_into_a_missing_folder_is_one_error_line_naming_it_before_any_work(tiny_gptj_dir, tmp_path):
    missing = tmp_path / "missing_dir"

    result = _run_cli("convert", str(tiny_gptj_dir(fmt="safetensors")), "-o", str(missing / "x.gguf"))

    assert result.returncode == 1
    # One line and no progress bar: the folder is checked before the checkpoint is read.
    expected = f"error: {missing}: no such folder, for the output {missing / 'x.gguf'}"
    assert result.stderr.strip().splitlines() == [expected]
