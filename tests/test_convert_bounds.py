"""No tensor is read outside its storage: every reader's offsets, shapes and strides are checked first.

The attack this guards against: a .bin whose pickle gives a tensor negative strides passed the
old size check (the negative and positive terms of the span cancel) and numpy's as_strided then
read outside the buffer, crashing or copying the converter's own memory into the output file.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptj_ggml.convert import convert_checkpoint, read_safetensors, read_torch_zip
from gptj_ggml.errors import ConversionError

from fuzz.fixtures import state_dict, write_checkpoint
from torch_zip_writer import PickledTensor, state_dict_pickle, write_torch_zip

STORAGE = np.arange(12, dtype=np.float32)


def _torch_zip(path: Path, tensor: PickledTensor, storage: bytes = STORAGE.tobytes()) -> Path:
    return write_torch_zip(path, state_dict_pickle({"w": tensor}), {"0": storage})


@pytest.mark.parametrize(
    ("size", "stride", "offset"),
    [
        ((3, 4), (4, -1), 3),  # the span's terms cancel: 1 + 2*4 + 3*(-1) = 6 elements "needed"
        ((2, 2), (10**6, -(10**6) + 1), 0),  # reaches element 10^6 while the span says 2
        ((12,), (-1,), 11),  # in bounds, but torch has no negative strides: refused all the same
        ((2,), (1,), -1),
    ],
)
def test_negative_strides_or_offsets_are_refused_by_name(tmp_path, size, stride, offset):
    path = _torch_zip(tmp_path / "model.bin", PickledTensor("0", size, stride, storage_offset=offset, numel=12))

    with pytest.raises(ConversionError, match=r"model\.bin: tensor w (has strides|starts at element)"):
        read_torch_zip(path)


@pytest.mark.parametrize(
    ("size", "stride", "offset"),
    [
        ((3, 4), (4, 1), 1),  # one element past the end
        ((13,), (1,), 0),
        ((2, 2), (11, 1), 0),  # the last element is 12
        ((1,), (1,), 12),
        ((0, 4), (4, 1), 13),  # no element, but the offset is past the storage
        ((2,), (2**62, 1)[:1], 0),
    ],
)
def test_a_view_reaching_past_its_storage_is_refused(tmp_path, size, stride, offset):
    path = _torch_zip(tmp_path / "model.bin", PickledTensor("0", size, stride, storage_offset=offset, numel=12))

    with pytest.raises(
        ConversionError, match=r"model\.bin: tensor w .*(past the end of its storage|outside its storage)"
    ):
        read_torch_zip(path)


@pytest.mark.parametrize(
    ("size", "stride", "offset"),
    [((3, 4), (4, 1), 0), ((2, 2), (10, 1), 0), ((1,), (1,), 11), ((0, 4), (4, 1), 12), ((12, 5), (1, 0), 0)],
)
def test_a_view_that_ends_exactly_at_its_storage_end_is_read(tmp_path, size, stride, offset):
    path = _torch_zip(tmp_path / "model.bin", PickledTensor("0", size, stride, storage_offset=offset, numel=12))

    expected = np.lib.stride_tricks.as_strided(STORAGE[offset:], shape=size, strides=[4 * s for s in stride])
    np.testing.assert_array_equal(read_torch_zip(path)["w"].read(), expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    strides=st.lists(st.integers(-6, 12), min_size=3, max_size=3),
    offset=st.integers(-3, 14),
    numel=st.integers(1, 14),
)
def test_any_layout_is_refused_or_reads_exactly_the_storage_elements_it_names(tmp_path, shape, strides, offset, numel):
    strides = strides[: len(shape)]
    storage = np.arange(numel, dtype=np.float32) + 100
    path = _torch_zip(
        tmp_path / "model.bin", PickledTensor("0", tuple(shape), tuple(strides), offset, numel=numel), storage.tobytes()
    )
    # The reference: every element's index, from the definition of a strided view.
    index = np.full(shape, offset, dtype=np.int64)
    for dim, stride in enumerate(strides):
        index = index + stride * np.arange(shape[dim]).reshape([-1 if d == dim else 1 for d in range(len(shape))])
    empty = math.prod(shape) == 0
    valid = offset >= 0 and all(s >= 0 for s in strides) and (offset <= numel if empty else index.max() < numel)

    if not valid:
        with pytest.raises(ConversionError, match="tensor w"):
            read_torch_zip(path)
        return
    np.testing.assert_array_equal(read_torch_zip(path)["w"].read(), storage[index])


def test_a_storage_that_is_not_whole_elements_or_disagrees_with_its_element_count_is_refused(tmp_path):
    odd = _torch_zip(tmp_path / "odd.bin", PickledTensor("0", (1,), (1,)), storage=b"\0" * 7)
    with pytest.raises(ConversionError, match="holds 7 bytes, not a whole number of F32 elements"):
        read_torch_zip(odd)
    lying = _torch_zip(tmp_path / "lying.bin", PickledTensor("0", (12,), (1,), numel=13))
    with pytest.raises(ConversionError, match="holds 48 bytes, but the pickle says 13 F32 elements"):
        read_torch_zip(lying)


def test_a_checkpoint_with_a_negative_stride_tensor_converts_to_nothing(tmp_path):
    folder = write_checkpoint(tmp_path / "checkpoint", "safetensors")
    (folder / "model.safetensors").unlink()
    weights = {name: value.astype(np.float16) for name, value in state_dict().items()}
    tensors = {
        name: PickledTensor(str(i), value.shape, (1,) * value.ndim, storage_class="HalfStorage", numel=value.size)
        for i, (name, value) in enumerate(weights.items())
    }
    for name, tensor in tensors.items():
        tensor.stride = tuple(s // 2 for s in weights[name].strides)
    cols = weights["lm_head.weight"].shape[1]
    # Each row read backwards from the end of the previous one: the span looks like rows*cols.
    tensors["lm_head.weight"].stride, tensors["lm_head.weight"].storage_offset = (cols + 1, -1), cols - 1
    write_torch_zip(
        folder / "pytorch_model.bin",
        state_dict_pickle(tensors),
        {str(i): value.tobytes() for i, value in enumerate(weights.values())},
    )
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(ConversionError, match=r"tensor lm_head\.weight has strides \[33, -1\]"):
        convert_checkpoint(folder, out / "model.gguf")
    assert list(out.iterdir()) == []


# safetensors: headers the safetensors library refuses are refused too.


def _safetensors(path: Path, header: dict, data: bytes) -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _entry(dtype: str, shape: list, offsets: list) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


@pytest.mark.parametrize(
    ("header", "data_length", "match"),
    [
        ({"a": _entry("F32", [2], [-8, 0])}, 8, "data_offsets"),  # would read the header as weights
        ({"a": _entry("F32", [2], [0, 8]), "b": _entry("F32", [2], [4, 12])}, 12, "overlaps"),
        ({"a": _entry("F32", [2], [0, 8]), "b": _entry("F32", [2], [0, 8])}, 8, "overlaps"),
        ({"a": _entry("F32", [2], [0, 8]), "b": _entry("F32", [1], [12, 16])}, 16, "gap"),
        ({"a": _entry("F32", [4], [0, 16])}, 8, "past the end of the file"),
        ({"a": _entry("F32", [3], [0, 8])}, 8, r"shape \[3\] \(F32\) but 8 bytes"),
        ({"a": _entry("F16", [2], [0, 8])}, 8, r"shape \[2\] \(F16\) but 8 bytes"),
        ({"a": _entry("F32", [2], [8, 0])}, 8, "bytes of data"),
        ({"a": _entry("F32", [-2], [0, 8])}, 8, "shape"),
        ({"a": _entry("F32", [2.0], [0, 8])}, 8, "shape"),
        ({"a": _entry("F32", [True, 2], [0, 8])}, 8, "shape"),
        ({"a": _entry("F32", [2], ["0", "8"])}, 8, "data_offsets"),
        ({"a": _entry("F32", [2], [0.0, 8.0])}, 8, "data_offsets"),
        ({"a": _entry("F32", [2], [0, 8, 9])}, 8, "data_offsets"),
        ({"a": _entry("F32", [2], [0, 8])}, 12, "the file has"),  # trailing bytes no tensor owns
        ({"a": _entry(["F32"], [2], [0, 8])}, 8, "dtype"),
        ({"a": [1, 2]}, 8, "not an object"),
    ],
)
def test_safetensors_headers_the_library_refuses_are_refused(tmp_path, header, data_length, match):
    path = _safetensors(tmp_path / "model.safetensors", header, bytes(data_length))
    with pytest.raises(safetensors.SafetensorError), safetensors.safe_open(path, "np") as file:
        [file.get_tensor(name) for name in file.keys()]  # noqa: SIM118 - the reference refuses it too

    with pytest.raises(ConversionError, match=match):
        read_safetensors(path)


def test_a_safetensors_tensor_named_twice_is_refused(tmp_path):
    text = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))

    with pytest.raises(ConversionError, match="the key 'a' appears twice"):
        read_safetensors(path)


def test_safetensors_records_read_only_their_own_bytes(tmp_path):
    data = np.arange(6, dtype=np.float32)
    header = {"a": _entry("F32", [2], [0, 8]), "b": _entry("F32", [4], [8, 24]), "__metadata__": {"format": "pt"}}
    records = read_safetensors(_safetensors(tmp_path / "model.safetensors", header, data.tobytes()))

    np.testing.assert_array_equal(records["a"].read(), data[:2])
    np.testing.assert_array_equal(records["b"].read(), data[2:])
    assert records["b"].storage_end - records["b"].storage_begin == 16


# Legacy GGML: a tensor's data must lie inside the file.


def test_legacy_tensor_data_past_the_end_is_refused(tmp_path):
    folder = write_checkpoint(tmp_path / "checkpoint", "safetensors")
    from fuzz.fixtures import write_legacy

    path = write_legacy(tmp_path / "ggml-model-f16.bin", folder)
    data = bytearray(path.read_bytes())
    # The last tensor is lm_head.bias (1-D, f32): make its size claim 2^31 - 1 values.
    position = data.rfind(b"lm_head.bias") - 12 - 4
    struct.pack_into("<i", data, position + 12, 2**31 - 1)
    path.write_bytes(bytes(data))

    with pytest.raises(ConversionError, match=r"tensor lm_head\.bias is truncated: its data needs 8589934588 bytes"):
        convert_checkpoint(path, tmp_path / "out.gguf")
    shutil.rmtree(folder)
