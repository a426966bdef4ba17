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

import json
import math
import struct
from pathlib import Path

from ..errors import ConversionError
from .tensor_record import TensorRecord, contiguous_strides, itemsize

_HEADER_LENGTH = struct.Struct("<Q")
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the safetensors library itself enforces
_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}


def read_safetensors(path: Path) -> dict[str, TensorRecord]:
    """The tensors of a safetensors file, by name, as lazy records."""
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(_HEADER_LENGTH.size)
        if len(prefix) < _HEADER_LENGTH.size:
            raise ConversionError(f"{path} is too short to be a safetensors file (truncated?)")
        (header_length,) = _HEADER_LENGTH.unpack(prefix)
        if header_length > _MAX_HEADER_BYTES or _HEADER_LENGTH.size + header_length > file_size:
            raise ConversionError(f"{path}: safetensors header length {header_length} is invalid (truncated file?)")
        try:
            header = json.loads(file.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConversionError(f"{path}: safetensors header is not valid JSON ({error})") from error
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: safetensors header is not a JSON object")
    data_start = _HEADER_LENGTH.size + header_length
    return {
        name: _record(path, name, entry, data_start, file_size)
        for name, entry in header.items()
        if name != "__metadata__"
    }


def _record(path: Path, name: str, entry: dict, data_start: int, file_size: int) -> TensorRecord:
    try:
        dtype = entry["dtype"]
        shape = tuple(int(size) for size in entry["shape"])
        begin, end = (int(offset) for offset in entry["data_offsets"])
    except (KeyError, TypeError, ValueError) as error:
        raise ConversionError(f"{path}: malformed safetensors entry for tensor {name}") from error
    if dtype not in _DTYPES:
        raise ConversionError(f"{path}: tensor {name} has unsupported dtype {dtype}")
    if end - begin != math.prod(shape) * itemsize(dtype):
        raise ConversionError(
            f"{path}: tensor {name} has shape {list(shape)} ({dtype}) but {end - begin} bytes of data"
        )
    if data_start + end > file_size:
        raise ConversionError(f"{path}: tensor {name} runs past the end of the file (truncated?)")
    return TensorRecord(
        name=name,
        path=path,
        dtype=dtype,
        shape=shape,
        strides=contiguous_strides(shape),
        offset=data_start + begin,
    )
