"""Read PyTorch ``.bin`` checkpoints without torch.

Since PyTorch 1.6 ``torch.save`` writes a zip archive: ``<prefix>/data.pkl`` is a pickle
of the state dict in which every tensor refers to a storage by key, and each storage's
raw little-endian bytes are the member ``<prefix>/data/<key>``, stored uncompressed.
We unpickle with a restricted unpickler that only knows the handful of globals a state
dict uses (so a checkpoint cannot run code) and turn every tensor into a
:class:`TensorRecord` pointing at its bytes inside the zip; nothing is read until the
tensor is written.
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ConversionError
from .tensor_record import TensorRecord, itemsize

# torch.<Name>Storage classes as they appear in the pickle -> our dtype names.
_STORAGE_CLASSES = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}

_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_ZIP_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: str


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor as the pickle describes it; its name is known only after unpickling."""

    storage: _StorageRef
    storage_offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _PendingTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_CLASSES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, source: Path):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ConversionError(
                f"{self._source}: the checkpoint pickle uses {module}.{name}, "
                "which is not part of a plain PyTorch state dict"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        # torch.save writes ("storage", storage_type, key, location, numel).
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise ConversionError(f"{self._source}: unexpected persistent id {pid!r} in the checkpoint pickle")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType):
            raise ConversionError(f"{self._source}: unsupported storage type {storage_type!r}")
        return _StorageRef(key=str(pid[2]), dtype=storage_type.dtype)


def read_torch_zip(path: Path) -> dict[str, TensorRecord]:
    """The tensors of a PyTorch zip checkpoint, by state-dict name, as lazy records.

    Raises :class:`ConversionError` for a legacy (pre-1.6, non-zip) file, a truncated
    archive, an unexpected pickle, or a storage too small for its tensors.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        if _looks_like_legacy_torch_file(path):
            raise ConversionError(
                f"{path} is a legacy (pre-PyTorch-1.6, non-zip) checkpoint; re-save it with a recent "
                "torch (torch.save(torch.load(f), f)) before converting"
            )
        raise ConversionError(f"{path} is not a PyTorch zip checkpoint (truncated or corrupt file?)")
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw_file:
            pickle_name = _find_pickle(archive, path)
            prefix = pickle_name[: -len("data.pkl")]
            _check_byteorder(archive, prefix, path)
            with archive.open(pickle_name) as pickle_file:
                state = _StateDictUnpickler(pickle_file, path).load()
            if not isinstance(state, dict):
                raise ConversionError(f"{path}: the checkpoint holds a {type(state).__name__}, not a state dict")
            return {
                name: _locate(archive, raw_file, path, prefix, name, pending)
                for name, pending in state.items()
                if isinstance(pending, _PendingTensor)
            }
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, OSError) as error:
        raise ConversionError(f"{path}: cannot read the checkpoint ({error})") from error


def _looks_like_legacy_torch_file(path: Path) -> bool:
    # The legacy format starts with a pickled magic number: protocol 2 header b"\x80\x02".
    with open(path, "rb") as file:
        return file.read(2) == b"\x80\x02"


def _find_pickle(archive: zipfile.ZipFile, path: Path) -> str:
    candidates = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
    if len(candidates) != 1:
        raise ConversionError(f"{path}: expected exactly one <prefix>/data.pkl in the zip, found {len(candidates)}")
    return candidates[0]


def _check_byteorder(archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
    try:
        byteorder = archive.read(prefix + "byteorder").decode().strip()
    except KeyError:
        return  # written before torch recorded it: always little-endian
    if byteorder != "little":
        raise ConversionError(f"{path}: {byteorder}-endian checkpoints are not supported")


def _locate(
    archive: zipfile.ZipFile, raw_file: BinaryIO, path: Path, prefix: str, name: str, pending: _PendingTensor
) -> TensorRecord:
    member = f"{prefix}data/{pending.storage.key}"
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise ConversionError(f"{path}: tensor {name} refers to storage {member}, which is missing") from None
    dtype = pending.storage.dtype
    record = TensorRecord(
        name=name,
        path=path,
        dtype=dtype,
        shape=pending.shape,
        strides=pending.strides,
        offset=pending.storage_offset * itemsize(dtype),
        member=member,
    )
    needed = (pending.storage_offset + record.span_elements) * itemsize(dtype)
    if needed > info.file_size:
        raise ConversionError(
            f"{path}: tensor {name} needs {needed} bytes of storage {member}, which holds {info.file_size}"
        )
    if info.compress_type != zipfile.ZIP_STORED:
        return record  # read through zipfile, which decompresses
    data_start = _member_data_start(raw_file, info, path)
    if data_start + info.file_size > path.stat().st_size:
        raise ConversionError(f"{path}: storage {member} runs past the end of the file (truncated?)")
    return TensorRecord(
        name=name,
        path=path,
        dtype=dtype,
        shape=pending.shape,
        strides=pending.strides,
        offset=data_start + record.offset,
    )


def _member_data_start(raw_file: BinaryIO, info: zipfile.ZipInfo, path: Path) -> int:
    # The local header's extra field can differ from the central directory's (torch pads
    # it to align storages), so its length must be read from the local header itself.
    raw_file.seek(info.header_offset)
    header = raw_file.read(_ZIP_LOCAL_HEADER.size)
    if len(header) != _ZIP_LOCAL_HEADER.size:
        raise ConversionError(f"{path}: zip local header of {info.filename} is cut off (truncated?)")
    signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(header)
    if signature != _ZIP_LOCAL_HEADER_SIGNATURE:
        raise ConversionError(f"{path}: corrupt zip local header for {info.filename}")
    return info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length
