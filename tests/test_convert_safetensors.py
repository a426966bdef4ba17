"""The safetensors header reader gives exactly what the safetensors library gives."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch

from gptj_ggml.convert import read_safetensors
from gptj_ggml.errors import ConversionError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reads_tensors_equal_to_safetensors(tmp_path, dtype):
    generator = torch.Generator().manual_seed(0)
    state = {"matrix": torch.randn(7, 5, generator=generator).to(dtype), "vector": torch.randn(3).to(dtype)}
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")

    records = read_safetensors(tmp_path / "model.safetensors")

    loaded = safetensors.torch.load_file(tmp_path / "model.safetensors")
    assert set(records) == set(loaded)
    for name, tensor in loaded.items():
        np.testing.assert_array_equal(records[name].read(), tensor.float().numpy())


def test_truncated_file_is_refused_by_name(tmp_path):
    safetensors.torch.save_file({"w": torch.ones(1000)}, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])

    with pytest.raises(ConversionError, match=r"model\.safetensors.*tensor w"):
        read_safetensors(tmp_path / "model.safetensors")
