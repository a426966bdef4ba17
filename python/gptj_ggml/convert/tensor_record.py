"""A lazy description of one tensor inside a checkpoint file, read only when asked.

Both checkpoint readers (PyTorch zip and safetensors) produce these records, so the
converter streams every format the same way: rows are read with plain file reads into
small buffers, never by memory-mapping the file (mapped pages that were touched count
in the process's RSS, which would then grow with the model).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import ConversionError
from .source_files import describe, display_name

# numpy has no bfloat16: bf16 data is read as uint16 and widened to float32 (see _to_numpy).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

#: The element types a GPT-J weight may have in a source checkpoint.
FLOAT_DTYPES = ("F32", "F16", "BF16")


def itemsize(dtype: str) -> int:
    """Bytes per element of a storage dtype name ("F32", "F16", "BF16", ...)."""
    return _STORAGE_DTYPES[dtype].itemsize


#: More dimensions than any tensor of a GPT-J checkpoint has (its causal-mask buffers have 4).
MAX_DIMS = 8
#: Sizes, strides and offsets are int64 in every format the converter reads.
_MAX_INT64 = (1 << 63) - 1


@dataclass(frozen=True)
class TensorRecord:
    """Where a tensor's elements live and how to interpret them.

    ``offset`` is the byte position of element 0 inside ``path`` (or inside the zip
    member ``member`` when the member is compressed and cannot be addressed directly).
    ``strides`` are in elements, as in PyTorch. ``storage_begin`` and ``storage_end`` bound the
    bytes the tensor may read (its storage, or its byte range): a record is checked when it is
    made (:meth:`__post_init__`), so no read can leave them, whatever the file said.
    """

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    storage_begin: int
    storage_end: int
    member: str | None = None

    def __post_init__(self) -> None:
        check_layout(
            self.path,
            self.name,
            self.dtype,
            self.shape,
            self.strides,
            self.offset,
            self.storage_begin,
            self.storage_end,
        )

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def is_contiguous(self) -> bool:
        return self.strides == contiguous_strides(self.shape)

    @property
    def span_elements(self) -> int:
        """Number of storage elements from element 0 to the last element, inclusive."""
        return span_elements(self.shape, self.strides)

    def read(self, out_dtype: np.dtype | None = None) -> np.ndarray:
        """The whole tensor as a numpy array (bf16 widened to float32), optionally cast."""
        if self.is_contiguous:
            array = self._read_elements(0, self.n_elements).reshape(self.shape)
        else:
            # Safe: the strides are non-negative and the span lies inside the buffer (checked
            # when the record was made), so as_strided stays inside `span`.
            span = self._read_elements(0, self.span_elements)
            item = span.itemsize
            array = np.lib.stride_tricks.as_strided(
                span, shape=self.shape, strides=tuple(s * item for s in self.strides)
            ).copy()
        return array if out_dtype is None else array.astype(out_dtype, copy=False)

    def iter_rows(self, max_bytes: int, out_dtype: np.dtype) -> Iterator[np.ndarray]:
        """The tensor in consecutive blocks of whole rows, each converted to ``out_dtype``.

        Blocks hold at most about ``max_bytes`` of source data, which is what keeps the
        converter's memory independent of the size of the largest tensor.
        """
        if not self.is_contiguous or len(self.shape) < 2 or self.n_elements == 0:
            yield self.read(out_dtype)
            return
        row_elements = math.prod(self.shape[1:])
        rows_per_block = max(1, max_bytes // (row_elements * itemsize(self.dtype)))
        if self.member is not None:
            # A compressed member is read front to back once: each seek in it decompresses from the start.
            yield from self._iter_member_rows(rows_per_block, row_elements, out_dtype)
            return
        for first in range(0, self.shape[0], rows_per_block):
            n_rows = min(rows_per_block, self.shape[0] - first)
            block = self._read_elements(first * row_elements, n_rows * row_elements)
            yield block.reshape((n_rows, *self.shape[1:])).astype(out_dtype, copy=False)

    def _iter_member_rows(self, rows_per_block: int, row_elements: int, out_dtype: np.dtype) -> Iterator[np.ndarray]:
        assert self.member is not None
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as file:
            file.seek(self.offset)
            for first in range(0, self.shape[0], rows_per_block):
                n_rows = min(rows_per_block, self.shape[0] - first)
                block = self._read_into(file, n_rows * row_elements)
                yield block.reshape((n_rows, *self.shape[1:])).astype(out_dtype, copy=False)

    def _read_elements(self, first: int, count: int) -> np.ndarray:
        start = self.offset + first * itemsize(self.dtype)
        if self.member is None:
            with open(self.path, "rb") as file:
                file.seek(start)
                return self._read_into(file, count)
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as file:
            file.seek(start)
            return self._read_into(file, count)

    def _read_into(self, file: BinaryIO, count: int) -> np.ndarray:
        raw = np.empty(count, dtype=_STORAGE_DTYPES[self.dtype])
        try:
            n_read = file.readinto(memoryview(raw).cast("B"))
        except (zipfile.BadZipFile, EOFError, zlib.error) as error:
            raise ConversionError(f"{self.path}: tensor {display_name(self.name)} cannot be read ({error})") from None
        if n_read != raw.nbytes:
            raise ConversionError(f"{self.path}: tensor {display_name(self.name)} is truncated (file ends early)")
        return _to_numpy(raw, self.dtype)


def span_elements(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Storage elements from a tensor's first element to its last, inclusive (0 when it has none)."""
    if math.prod(shape) == 0:
        return 0
    return 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))


def check_layout(
    path: Path,
    name: str,
    dtype: str,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    storage_begin: int,
    storage_end: int,
) -> None:
    """Refuse a tensor any element of which would lie outside the bytes ``[storage_begin, storage_end)``.

    Exact integer arithmetic on validated values: sizes and strides are non-negative int64
    (a negative stride could cancel a positive one in the span and point before the storage),
    and every reachable element, the last one at ``offset + itemsize * (span - 1)``, is inside.
    A tensor with no element reads nothing; its offset must still lie within the storage.
    """

    def fail(problem: str) -> ConversionError:
        return ConversionError(f"{path}: tensor {display_name(name)} {problem}")

    if dtype not in _STORAGE_DTYPES:
        raise fail(f"has unknown dtype {dtype!r}")
    for what, values in (("shape", shape), ("strides", strides)):
        if not isinstance(values, tuple) or len(values) > MAX_DIMS or not all(map(_is_int64, values)):
            raise fail(f"has {what} {_describe(values)}: expected at most {MAX_DIMS} integers from 0 to 2**63-1")
    if len(shape) != len(strides):
        raise fail(f"has {len(shape)} dimensions but {len(strides)} strides")
    for what, value in (("offset", offset), ("storage begin", storage_begin), ("storage end", storage_end)):
        if not _is_int64(value):
            raise fail(f"has {what} {_describe(value)}: expected an integer from 0 to 2**63-1")
    if not storage_begin <= offset <= storage_end:
        raise fail(f"starts at byte {offset}, outside its storage (bytes {storage_begin} to {storage_end})")
    span = span_elements(shape, strides)
    end = offset + span * itemsize(dtype)
    if end > storage_end:
        raise fail(
            f"of shape {list(shape)} and strides {list(strides)} needs bytes {offset} to {end}, "
            f"past the end of its storage (bytes {storage_begin} to {storage_end})"
        )


def _is_int64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_INT64


def _describe(value: object) -> str:
    def plain(item: object) -> bool:
        return isinstance(item, int) and item.bit_length() <= 64

    if plain(value) or (isinstance(value, tuple) and len(value) <= MAX_DIMS and all(map(plain, value))):
        return repr(list(value) if isinstance(value, tuple) else value)
    return describe(value)


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides, in elements, of a dense tensor of this shape."""
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _to_numpy(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        # bf16 is the upper half of a float32: shifting the bits up gives the exact value.
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw
