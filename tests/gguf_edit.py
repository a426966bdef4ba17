"""Write altered copies of a GGUF file, to test how the engine treats bad files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np


def rewrite_gguf(
    src: Path,
    dst: Path,
    *,
    set_kv: dict[str, tuple[Any, gguf.GGUFValueType]] | None = None,
    drop_kv: tuple[str, ...] = (),
    drop_tensors: tuple[str, ...] = (),
    change_tensor: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> Path:
    """Copy ``src`` to ``dst`` with metadata set or dropped and tensors dropped or changed.

    ``set_kv`` maps a key to (value, type); ``change_tensor(name, data)`` returns the data
    to store (same dtype) for every tensor.
    """
    reader = gguf.GGUFReader(src)
    set_kv = dict(set_kv or {})
    architecture = set_kv.get("general.architecture", (reader.fields["general.architecture"].contents(),))[0]
    writer = gguf.GGUFWriter(dst, architecture)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop_kv or name in set_kv:
            continue
        sub_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
    for name, (value, value_type) in set_kv.items():
        if name != "general.architecture":
            writer.add_key_value(name, value, value_type)
    for tensor in reader.tensors:
        if tensor.name in drop_tensors:
            continue
        data = np.array(tensor.data)
        raw_dtype = tensor.tensor_type
        if change_tensor is not None:
            changed = change_tensor(tensor.name, data)
            raw_dtype = raw_dtype if changed.dtype == data.dtype else None  # let gguf name the new type
            data = changed
        writer.add_tensor(tensor.name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def patch_bytes(src: Path, dst: Path, edits: dict[int, bytes]) -> Path:
    """Copy ``src`` to ``dst`` with the bytes at each offset replaced (the file keeps its size):
    for files gguf's writer would refuse to write (a duplicate key, invalid UTF-8, a count or a
    length that lies)."""
    data = bytearray(src.read_bytes())
    for offset, new in edits.items():
        data[offset : offset + len(new)] = new
    dst.write_bytes(data)
    return dst


def value_offset(data: bytes, key: str) -> int:
    """Offset of the value of scalar metadata ``key`` (just after its 4-byte type), found by name."""
    encoded = key.encode()
    at = data.find(len(encoded).to_bytes(8, "little") + encoded)
    if at < 0:
        raise KeyError(key)
    return at + 8 + len(encoded) + 4


def with_a_nan_activation(src: Path, dst: Path, norm: str = "output_norm.weight", index: int = 0) -> Path:
    """A copy of src whose norm (the final one by default) makes one activation of the products
    reading its output NaN (one value of a block, so a kernel that takes the block's maximum must
    not skip it): the int8 kernels round activations to integers, and a NaN must not become a
    plausible number."""

    def poison(name: str, data):
        if name != norm:
            return data
        data = data.copy()
        data[index] = float("nan")
        return data

    return rewrite_gguf(src, dst, change_tensor=poison)
