"""Session fixtures for the quantization tests: one f16 checkpoint whose rows fit every type.

n_embd 256 (rows of 256 and 1024 values) fits the k-quants' 256-value blocks. The checkpoint
is float16 (like GPT-J-6B's), so quantizing the f16 GGUF sees exactly the values converting
the checkpoint sees. Each type is converted once per session, on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

QUANT_CHECKPOINT = {"fmt": "bin-f16", "n_embd": 256, "n_head": 4, "rotary_dim": 16, "n_layer": 2}
#: 96 random ids: the logits every type is compared on.
PROMPT = np.random.default_rng(7).integers(0, 50400, 96).tolist()


@pytest.fixture(scope="session")
def quant_model_path(tiny_gptj_dir, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``quant_model_path(outtype, pure=False) -> .gguf`` converted from the f16 checkpoint."""
    from gptj_ggml.convert import convert_checkpoint

    cache: dict[tuple[str, bool], Path] = {}

    def convert(outtype: str, pure: bool = False) -> Path:
        if (outtype, pure) not in cache:
            out = tmp_path_factory.mktemp("quant") / f"tiny-{outtype}{'-pure' if pure else ''}.gguf"
            cache[(outtype, pure)] = convert_checkpoint(
                tiny_gptj_dir(**QUANT_CHECKPOINT), out, outtype=outtype, pure=pure
            )
        return cache[(outtype, pure)]

    return convert


@pytest.fixture(scope="session")
def quant_logits(quant_model_path) -> Callable[..., np.ndarray]:
    """Factory: ``quant_logits(outtype, pure=False)``: the model's logits on PROMPT, cached."""
    from gptj_ggml import Model

    cache: dict[tuple[str, bool], np.ndarray] = {}

    def logits(outtype: str, pure: bool = False) -> np.ndarray:
        if (outtype, pure) not in cache:
            cache[(outtype, pure)] = Model(quant_model_path(outtype, pure)).logits(PROMPT)
        return cache[(outtype, pure)]

    return logits


def tensor_types(path: Path) -> dict[str, int]:
    """Every tensor of a GGUF file: name -> ggml type (the fast header reader, checked against
    gguf.GGUFReader in test_gguf_header_reader_agrees_with_gguf_py)."""
    from gptj_ggml.convert.gguf_input import read_gguf_header

    return {t.name: t.type for t in read_gguf_header(path).tensors}


def tensor_bytes(path: Path) -> dict[str, tuple[int, bytes]]:
    """Every tensor of a GGUF file: name -> (ggml type, raw bytes)."""
    from gptj_ggml.convert.gguf_input import read_gguf_header

    with open(path, "rb") as file:
        out = {}
        for t in read_gguf_header(path).tensors:
            file.seek(t.offset)
            out[t.name] = (int(t.type), file.read(t.nbytes))
        return out
