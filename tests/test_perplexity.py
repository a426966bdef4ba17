"""Perplexity and KL divergence, against numpy computed from Model.logits."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from gptj_ggml import Model
from gptj_ggml.perplexity import chunk_ids, kl_divergence, perplexity

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair."
)


def numpy_nll(model: Model, chunk: list[int]) -> np.ndarray:
    logits = model.logits(chunk).astype(np.float64)
    out = []
    for i in range(1, len(chunk)):
        row = logits[i - 1]
        out.append(-(row[chunk[i]] - row.max() - math.log(np.exp(row - row.max()).sum())))
    return np.array(out)


def test_perplexity_is_exp_of_the_mean_nll_from_logits(tiny_model_path):
    model = Model(tiny_model_path("f16"))
    ids = model.tokenize(TEXT)
    result = perplexity(model, ids, n_ctx=16)
    nll = np.concatenate([numpy_nll(model, ids[i : i + 16]) for i in range(0, len(ids), 16) if len(ids[i : i + 16]) > 1])
    assert result.n_scored == nll.size
    assert result.perplexity == pytest.approx(math.exp(nll.mean()), rel=1e-9)


def test_chunks_cover_the_text_and_drop_a_lone_last_token():
    assert chunk_ids(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert chunk_ids(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="needs at least 2"):
        chunk_ids([1], 4)


def test_a_model_against_itself_has_zero_kl_and_full_agreement(tiny_model_path):
    model = Model(tiny_model_path("f16"))
    result = kl_divergence(model, Model(tiny_model_path("f16")), model.tokenize(TEXT), n_ctx=32)
    assert result.mean_kl == pytest.approx(0, abs=1e-9)
    assert result.top1_agreement == 1.0
    assert result.perplexity == pytest.approx(result.reference_perplexity)


def test_kl_matches_numpy(tiny_model_path):
    model, base = Model(tiny_model_path("f16")), Model(tiny_model_path("f32"))
    ids = model.tokenize(TEXT)[:30]
    result = kl_divergence(model, base, ids, n_ctx=30)
    log_q = np.log(_softmax(model.logits(ids)[:-1]))
    log_p = np.log(_softmax(base.logits(ids)[:-1]))
    assert result.mean_kl == pytest.approx(float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean()), rel=1e-6, abs=1e-12)
    assert result.top1_agreement == pytest.approx(float((log_p.argmax(-1) == log_q.argmax(-1)).mean()))


def _softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    # The installed package: these commands need the compiled engine.
    return subprocess.run([sys.executable, "-m", "gptj_ggml", *args], capture_output=True, text=True, check=False)


def test_cli_prints_perplexity_and_kl(tiny_model_path, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    model = Model(tiny_model_path("f16"))
    expected = perplexity(model, model.tokenize(TEXT), n_ctx=32).perplexity
    result = _run_cli("perplexity", str(tiny_model_path("f16")), "-f", str(text), "--ctx", "32")
    assert result.returncode == 0, result.stderr
    assert f"perplexity: {expected:.4f}" in result.stdout
    result = _run_cli("perplexity", str(tiny_model_path("f16")), "-f", str(text), "--ctx", "32",
                      "--kl-base", str(tiny_model_path("f16")))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "top-1 agreement with the base: 100.00%" in result.stdout


def test_cli_quantize_writes_a_file_and_reports_errors_in_one_line(tiny_model_path, tmp_path):
    out = tmp_path / "q8_0.gguf"
    result = _run_cli("quantize", str(tiny_model_path("f16")), str(out), "q8_0")
    assert result.returncode == 0, result.stderr
    assert Model(out).metadata["general.file_type"] == 7
    result = _run_cli("quantize", str(out), str(tmp_path / "again.gguf"), "q4_0")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def _assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_perplexity_of_a_missing_file_is_one_error_line_naming_it(tiny_model_path, tmp_path):
    missing = tmp_path / "missing.txt"

    result = _run_cli("perplexity", str(tiny_model_path("f16")), "-f", str(missing))

    _assert_one_error_line(result, f"{missing}: cannot read the text for -f (No such file or directory)")


def test_cli_perplexity_of_a_file_that_is_not_utf8_is_one_error_line_naming_it(tiny_model_path, tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)))

    result = _run_cli("perplexity", str(tiny_model_path("f16")), "-f", str(binary))

    _assert_one_error_line(result, f"{binary}: not UTF-8 text")
