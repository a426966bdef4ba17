"""Fixtures for tests of the engine: converted tiny models and their transformers twins.

Import the fixtures a test module needs (``from model_fixtures import tiny_model_path``);
they build on ``tiny_gptj_dir`` from conftest.py and are cached for the whole session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers


@pytest.fixture(scope="session")
def tiny_model_path(tiny_gptj_dir, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``tiny_model_path(outtype="f32", **make_tiny_gptj_kwargs) -> .gguf path``."""
    from gptj_ggml.convert import convert_checkpoint

    cache: dict[str, Path] = {}

    def convert(outtype: str = "f32", **kwargs) -> Path:
        key = repr(sorted({"outtype": outtype, **kwargs}.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("model") / f"tiny-{outtype}.gguf"
            cache[key] = convert_checkpoint(tiny_gptj_dir(**kwargs), out, outtype=outtype)
        return cache[key]

    return convert


@pytest.fixture(scope="session")
def hf_model(tiny_gptj_dir) -> Callable[..., transformers.GPTJForCausalLM]:
    """Factory: the transformers model (float32, eval mode) of ``tiny_gptj_dir(**kwargs)``."""
    cache: dict[str, transformers.GPTJForCausalLM] = {}

    def load(**kwargs) -> transformers.GPTJForCausalLM:
        key = repr(sorted(kwargs.items()))
        if key not in cache:
            folder = tiny_gptj_dir(**kwargs)
            cache[key] = transformers.GPTJForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        return cache[key]

    return load


def reference_logits(model: transformers.GPTJForCausalLM, ids: list[int]) -> numpy.ndarray:  # noqa: F821
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def reference_greedy(model: transformers.GPTJForCausalLM, ids: list[int], n_new: int, **generate_args) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            max_new_tokens=n_new,
            min_new_tokens=n_new,
            do_sample=False,
            pad_token_id=model.config.eos_token_id,
            **generate_args,
        )
    return out[0, len(ids) :].tolist()
