"""A lazy description of one tensor inside a checkpoint file, read only when asked.

Both checkpoint readers (PyTorch zip and safetensors) produce these records, so the
converter streams every format the same way: rows are read with plain file reads into
small buffers, never by memory-mapping the file (mapped pages that were touched count
in the process's RSS, which would then grow with the model).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConversionError

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


@dataclass(frozen=True)
class TensorRecord:
    """Where a tensor's elements live and how to interpret them.

    ``offset`` is the byte position of element 0 inside ``path`` (or inside the zip
    member ``member`` when the member is compressed and cannot be addressed directly).
    ``strides`` are in elements, as in PyTorch.
    """

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    member: str | None = None

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def is_contiguous(self) -> bool:
        return self.strides == contiguous_strides(self.shape)

    @property
    def span_elements(self) -> int:
        """Number of storage elements from element 0 to the last element, inclusive."""
        if self.n_elements == 0:
            return 0
        return 1 + sum((size - 1) * stride for size, stride in zip(self.shape, self.strides))

    def read(self, out_dtype: np.dtype | None = None) -> np.ndarray:
        """The whole tensor as a numpy array (bf16 widened to float32), optionally cast."""
        if self.is_contiguous:
            array = self._read_elements(0, self.n_elements).reshape(self.shape)
        else:
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
        if not self.is_contiguous or len(self.shape) < 2:
            yield self.read(out_dtype)
            return
        row_elements = math.prod(self.shape[1:])
        rows_per_block = max(1, max_bytes // (row_elements * itemsize(self.dtype)))
        for first in range(0, self.shape[0], rows_per_block):
            n_rows = min(rows_per_block, self.shape[0] - first)
            block = self._read_elements(first * row_elements, n_rows * row_elements)
            yield block.reshape((n_rows, *self.shape[1:])).astype(out_dtype, copy=False)

    def _read_elements(self, first: int, count: int) -> np.ndarray:
        storage_dtype = _STORAGE_DTYPES[self.dtype]
        raw = np.empty(count, dtype=storage_dtype)
        start = self.offset + first * storage_dtype.itemsize
        if self.member is None:
            with open(self.path, "rb") as file:
                file.seek(start)
                n_read = file.readinto(memoryview(raw).cast("B"))
        else:
            with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as file:
                file.seek(start)
                n_read = file.readinto(memoryview(raw).cast("B"))
        if n_read != raw.nbytes:
            raise ConversionError(f"{self.path}: tensor {self.name} is truncated (file ends early)")
        return _to_numpy(raw, self.dtype)


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
