"""The torch-free reader of PyTorch .bin checkpoints gives exactly what torch.load gives."""

from __future__ import annotations

import datetime
import zipfile

import numpy as np
import pytest
import torch

from gptj_ggml.convert import read_torch_zip
from gptj_ggml.errors import ConversionError


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reads_tensors_equal_to_torch_load(tmp_path, dtype):
    generator = torch.Generator().manual_seed(0)
    state = {
        "matrix": torch.randn(7, 5, generator=generator).to(dtype),
        "vector": torch.randn(11, generator=generator).to(dtype),
        "scalar": torch.tensor(-1e9).to(dtype),
    }
    torch.save(state, tmp_path / "model.bin")

    records = read_torch_zip(tmp_path / "model.bin")

    loaded = torch.load(tmp_path / "model.bin")
    assert set(records) == set(loaded)
    for name, tensor in loaded.items():
        np.testing.assert_array_equal(records[name].read(), _as_numpy(tensor))


def test_reads_views_sharing_one_storage(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {"base": base, "rows": base[2:4], "transposed": base.t(), "column": base[:, 3]}
    torch.save(state, tmp_path / "model.bin")

    records = read_torch_zip(tmp_path / "model.bin")

    for name, tensor in torch.load(tmp_path / "model.bin").items():
        np.testing.assert_array_equal(records[name].read(), tensor.numpy())
    assert not records["transposed"].is_contiguous


def test_reads_row_blocks_of_a_large_tensor(tmp_path):
    tensor = torch.randn(1000, 16, dtype=torch.float16)
    torch.save({"big": tensor}, tmp_path / "model.bin")

    record = read_torch_zip(tmp_path / "model.bin")["big"]
    blocks = list(record.iter_rows(max_bytes=1000, out_dtype=np.dtype(np.float32)))

    assert len(blocks) > 1
    np.testing.assert_array_equal(np.concatenate(blocks), tensor.float().numpy())


def test_reads_bool_buffers(tmp_path):
    mask = torch.tril(torch.ones((4, 4), dtype=torch.bool)).view(1, 1, 4, 4)
    torch.save({"attn.bias": mask}, tmp_path / "model.bin")

    np.testing.assert_array_equal(read_torch_zip(tmp_path / "model.bin")["attn.bias"].read(), mask.numpy())


def test_legacy_non_zip_file_is_refused_by_name(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "old.bin", _use_new_zipfile_serialization=False)

    with pytest.raises(ConversionError, match=r"old\.bin.*legacy"):
        read_torch_zip(tmp_path / "old.bin")


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    torch.save({"w": torch.ones(2), "when": datetime.date(2021, 6, 4)}, tmp_path / "model.bin")

    with pytest.raises(ConversionError, match="datetime"):
        read_torch_zip(tmp_path / "model.bin")


def test_truncated_file_is_refused_by_name(tmp_path):
    torch.save({"w": torch.ones(1000)}, tmp_path / "model.bin")
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 2])

    with pytest.raises(ConversionError, match=r"model\.bin"):
        read_torch_zip(tmp_path / "model.bin")


def test_reads_compressed_zip_members(tmp_path):
    state = {"matrix": torch.randn(9, 4), "vector": torch.randn(5, dtype=torch.float16)}
    torch.save(state, tmp_path / "stored.bin")
    with zipfile.ZipFile(tmp_path / "stored.bin") as source, zipfile.ZipFile(
        tmp_path / "deflated.bin", "w", compression=zipfile.ZIP_DEFLATED
    ) as target:
        for name in source.namelist():
            target.writestr(name, source.read(name))

    records = read_torch_zip(tmp_path / "deflated.bin")

    for name, tensor in state.items():
        np.testing.assert_array_equal(records[name].read(), tensor.numpy())
