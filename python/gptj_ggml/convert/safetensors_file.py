"""Read the tensor directory of a ``.safetensors`` file.

The format is an 8-byte little-endian header length, a JSON header mapping each name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (relative to the end of the header),
then the data. We parse the header ourselves rather than use ``safetensors.safe_open``
for two reasons: its numpy interface cannot return bfloat16 tensors, and it memory-maps
the whole file, so copying every tensor out of it makes every page of the model resident
in our RSS (measured: reading every tensor of a 1.5 GiB 2-layer GPT-J-6B-shaped file
with ``safe_open(...).get_tensor`` peaked at 1977 MiB RSS; plain reads stay at ~120 MiB
whatever the model size). The header is validated as strictly as the library does it:
known dtypes, sizes matching shapes, and data inside the file.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from .source_files import describe, display_name, parse_json
from .tensor_record import MAX_DIMS, TensorRecord, contiguous_strides, itemsize

_HEADER_LENGTH = struct.Struct("<Q")
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the safetensors library itself enforces
_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}
_METADATA = "__metadata__"


def read_safetensors(path: Path) -> dict[str, TensorRecord]:
    """The tensors of a safetensors file, by name, as lazy records.

    The header is checked as the safetensors library checks it: a JSON object of UTF-8 text;
    per tensor a known dtype, a shape of non-negative integers and ``data_offsets`` [begin, end]
    with end - begin = the bytes of the shape; the tensors' byte ranges, in order, tile the data
    exactly (no overlap, no gap, nothing past the end of the file). Stricter than the library on
    one point: a key that appears twice is refused (JSON parsers keep either one).
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            file_size = path.stat().st_size
            prefix = file.read(_HEADER_LENGTH.size)
            if len(prefix) < _HEADER_LENGTH.size:
                raise ConversionError(f"{path} is too short to be a safetensors file (truncated?)")
            (header_length,) = _HEADER_LENGTH.unpack(prefix)
            if header_length > _MAX_HEADER_BYTES or _HEADER_LENGTH.size + header_length > file_size:
                raise ConversionError(f"{path}: safetensors header length {header_length} is invalid (truncated file?)")
            raw_header = file.read(header_length)
    except OSError as error:
        raise ConversionError(f"{path}: cannot read it ({error.strerror or error})") from None
    try:
        text = raw_header.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConversionError(f"{path}: safetensors header is not UTF-8 (byte {8 + error.start})") from None
    header = parse_json(text, path)
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: safetensors header is not a JSON object")
    data_start = _HEADER_LENGTH.size + header_length
    metadata = header.get(_METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise ConversionError(f"{path}: safetensors {_METADATA} must map names to strings")
    entries = [_entry(path, name, entry) for name, entry in header.items() if name != _METADATA]

    # The byte ranges, sorted, must follow each other from the start of the data to the end of the file.
    position = 0
    for name, dtype, shape, begin, end in sorted(entries, key=lambda entry: (entry[3], entry[4])):
        if data_start + end > file_size:
            raise ConversionError(f"{path}: tensor {display_name(name)} runs past the end of the file (truncated?)")
        if begin != position:
            problem = "overlaps the previous tensor's" if begin < position else f"leaves a gap after byte {position} of"
            raise ConversionError(f"{path}: tensor {display_name(name)}'s data (bytes {begin} to {end}) {problem} data")
        position = end
    if data_start + position != file_size:
        raise ConversionError(
            f"{path}: the tensors' data ends at byte {data_start + position} but the file has {file_size} bytes"
        )
    return {
        name: _record(path, name, dtype, shape, data_start + begin, data_start + end)
        for name, dtype, shape, begin, end in entries
    }


def _record(path: Path, name: str, dtype: str, shape: tuple[int, ...], begin: int, end: int) -> TensorRecord:
    return TensorRecord(
        name=name, path=path, dtype=dtype, shape=shape, strides=contiguous_strides(shape),
        offset=begin, storage_begin=begin, storage_end=end,
    )  # fmt: skip


def _entry(path: Path, name: str, entry: Any) -> tuple[str, str, tuple[int, ...], int, int]:
    def fail(problem: str) -> ConversionError:
        return ConversionError(f"{path}: safetensors entry of tensor {display_name(name)} {problem}")

    if not isinstance(entry, dict):
        raise fail(f"is {describe(entry)}, not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise fail(f"has unsupported dtype {describe(dtype)}")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(map(_is_size, shape))):
        raise fail(f"has shape {describe(shape)}: expected at most {MAX_DIMS} non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_size, offsets))):
        raise fail(f"has data_offsets {describe(offsets)}: expected [begin, end], two non-negative integers")
    begin, end = offsets
    if end < begin or end - begin != math.prod(shape) * itemsize(dtype):
        raise ConversionError(
            f"{path}: tensor {display_name(name)} has shape {list(shape)} ({dtype}) but {end - begin} bytes of data"
        )
    return name, dtype, tuple(shape), begin, end


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << 63)
