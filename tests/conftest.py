"""Shared pytest fixtures. Checkpoint-building code lives in checkpoints.py; fixtures here only cache it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import pytest

from checkpoints import make_tiny_gptj, tiny_gptj_state_dict

# Fixtures of the engine and tokenizer tests, available to every test module.
pytest_plugins = ["model_fixtures", "quant_fixtures", "tokenizer_fixtures"]


def _cache_key(kwargs: dict) -> str:
    return repr(sorted(kwargs.items()))


@pytest.fixture(scope="session")
def tiny_gptj_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``tiny_gptj_dir(**make_tiny_gptj_kwargs) -> folder``, built once per session.

    The folders are shared between tests: copy one before modifying it.
    """
    cache: dict[str, Path] = {}

    def make(**kwargs) -> Path:
        key = _cache_key(kwargs)
        if key not in cache:
            cache[key] = make_tiny_gptj(tmp_path_factory.mktemp("tiny-gptj"), **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_gptj_reference() -> Callable[..., dict]:
    """Factory: ``tiny_gptj_reference(**make_tiny_gptj_kwargs) -> {hf_name: torch.Tensor}``, cached."""
    cache: dict[str, dict] = {}

    def build(**kwargs) -> dict:
        key = _cache_key(kwargs)
        if key not in cache:
            cache[key] = tiny_gptj_state_dict(**kwargs)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def tiny_gptj_gguf(tiny_gptj_dir, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., gguf.GGUFReader]:
    """Factory: ``tiny_gptj_gguf(outtype="f16", **make_tiny_gptj_kwargs) -> GGUFReader`` of the converted file.

    Cached: converting is quick but opening a GGUF with its 50400-token vocabulary takes ~2 s.
    """
    from gptj_ggml.convert import convert_checkpoint

    cache: dict[str, gguf.GGUFReader] = {}

    def convert(outtype: str = "f16", **kwargs) -> gguf.GGUFReader:
        key = _cache_key({"outtype": outtype, **kwargs})
        if key not in cache:
            out = tmp_path_factory.mktemp("gguf") / f"tiny-{outtype}.gguf"
            cache[key] = gguf.GGUFReader(convert_checkpoint(tiny_gptj_dir(**kwargs), out, outtype=outtype))
        return cache[key]

    return convert
