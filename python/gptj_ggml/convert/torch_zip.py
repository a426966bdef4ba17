"""Read PyTorch ``.bin`` checkpoints without torch.

Since PyTorch 1.6 ``torch.save`` writes a zip archive: ``<prefix>/data.pkl`` is a pickle
of the state dict in which every tensor refers to a storage by key, and each storage's
raw little-endian bytes are the member ``<prefix>/data/<key>``, stored uncompressed.
We unpickle with our own small pickle machine (:mod:`.state_dict_pickle`), which knows only
the opcodes and the handful of globals a state dict uses (so a checkpoint cannot run code)
and bounds its size, object count and nesting, then turn every tensor into a
:class:`TensorRecord` pointing at its bytes inside the zip, checked to lie inside its storage;
nothing is read until the tensor is written.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from ..errors import ConversionError
from .source_files import display_name
from .state_dict_pickle import MAX_PICKLE_BYTES, PendingTensor, load_state_dict
from .tensor_record import TensorRecord, itemsize

_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_ZIP_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
#: Deflate cannot expand data more than ~1032 times: a member that claims more is corrupt.
_MAX_DEFLATE_RATIO = 1040
#: What ``torch.load`` reads (miniz): stored and deflated members, nothing else.
_COMPRESSIONS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
# Errors zipfile and zlib raise on a corrupt archive (besides OSError for a file that cannot be read).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, struct.error, ValueError, OSError)


def read_torch_zip(path: Path) -> dict[str, TensorRecord]:
    """The tensors of a PyTorch zip checkpoint, by state-dict name, as lazy records.

    Raises :class:`ConversionError` for a legacy (pre-1.6, non-zip) file, a truncated or
    corrupt archive, an unexpected pickle, or a tensor reaching outside its storage.
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
            _check_members(archive, path)
            pickle_name = _find_pickle(archive, path)
            prefix = pickle_name[: -len("data.pkl")]
            _check_byteorder(archive, prefix, path)
            state = load_state_dict(_read_member(archive, pickle_name, MAX_PICKLE_BYTES, path), path)
            file_size = path.stat().st_size
            return {
                name: _locate(archive, raw_file, file_size, path, prefix, name, pending)
                for name, pending in state.items()
                if isinstance(pending, PendingTensor)
            }
    except ConversionError:
        raise
    except _ZIP_ERRORS as error:
        raise ConversionError(f"{path}: cannot read the checkpoint ({error})") from None


def _looks_like_legacy_torch_file(path: Path) -> bool:
    # The legacy format starts with a pickled magic number: protocol 2 header b"\x80\x02".
    with open(path, "rb") as file:
        return file.read(2) == b"\x80\x02"


def _check_members(archive: zipfile.ZipFile, path: Path) -> None:
    seen: set[str] = set()
    for info in archive.infolist():
        if info.filename in seen:
            raise ConversionError(f"{path}: the zip holds {info.filename} twice (which one is meant?)")
        seen.add(info.filename)


def _find_pickle(archive: zipfile.ZipFile, path: Path) -> str:
    candidates = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
    if len(candidates) != 1:
        raise ConversionError(f"{path}: expected exactly one <prefix>/data.pkl in the zip, found {len(candidates)}")
    return candidates[0]


def _read_member(archive: zipfile.ZipFile, name: str, max_bytes: int, path: Path) -> bytes:
    """A member's bytes, decompressing at most ``max_bytes`` + 1 of them whatever it claims."""
    info = archive.getinfo(name)
    _check_readable(info, path)
    with archive.open(info) as file:
        # Never more than the limit, whatever the member claims (it is checked as it decompresses).
        data = file.read(min(info.file_size, max_bytes) + 1)
    if len(data) > max_bytes or info.file_size > max_bytes:
        raise ConversionError(f"{path}: {name} is larger than {max_bytes} bytes, far more than a state dict needs")
    return data


def _check_readable(info: zipfile.ZipInfo, path: Path) -> None:
    if info.flag_bits & 0x1:
        raise ConversionError(f"{path}: {info.filename} is encrypted")
    if info.compress_type not in _COMPRESSIONS:
        raise ConversionError(
            f"{path}: {info.filename} uses zip compression method {info.compress_type}; "
            "a checkpoint's members are stored or deflated"
        )
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 64:
        raise ConversionError(
            f"{path}: {info.filename} claims {info.file_size} bytes from {info.compress_size} compressed ones, "
            "more than deflate can give (corrupt file?)"
        )
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ConversionError(f"{path}: {info.filename} is stored but its two sizes differ (corrupt zip directory)")


def _check_byteorder(archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
    try:
        raw = _read_member(archive, prefix + "byteorder", 16, path)
    except KeyError:
        return  # written before torch recorded it: always little-endian
    byteorder = raw.decode("ascii", errors="replace").strip()
    if byteorder != "little":
        raise ConversionError(f"{path}: {byteorder[:16]!r} byte order: only little-endian checkpoints are supported")


def _locate(
    archive: zipfile.ZipFile,
    raw_file: BinaryIO,
    file_size: int,
    path: Path,
    prefix: str,
    name: str,
    pending: PendingTensor,
) -> TensorRecord:
    member = f"{prefix}data/{pending.storage.key}"
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise ConversionError(
            f"{path}: tensor {display_name(name)} refers to storage {member}, which is missing"
        ) from None
    _check_readable(info, path)
    dtype = pending.storage.dtype
    element_size = itemsize(dtype)
    numel = pending.storage.numel
    if numel is not None and numel * element_size != info.file_size:
        raise ConversionError(
            f"{path}: storage {member} of tensor {display_name(name)} holds {info.file_size} bytes, but the pickle "
            f"says {numel} {dtype} elements ({numel * element_size} bytes)"
        )
    if info.file_size % element_size:
        raise ConversionError(
            f"{path}: storage {member} of tensor {display_name(name)} holds {info.file_size} bytes, "
            f"not a whole number of {dtype} elements"
        )
    offset = pending.storage_offset * element_size
    if offset < 0:
        raise ConversionError(
            f"{path}: tensor {display_name(name)} starts at element {pending.storage_offset} of its storage"
        )
    if info.compress_type != zipfile.ZIP_STORED:
        # Read through zipfile, which decompresses; offsets are inside the member.
        return TensorRecord(
            name=name, path=path, dtype=dtype, shape=pending.shape, strides=pending.strides,
            offset=offset, storage_begin=0, storage_end=info.file_size, member=member,
        )  # fmt: skip
    data_start = _member_data_start(raw_file, info, path)
    if data_start + info.file_size > file_size:
        raise ConversionError(f"{path}: storage {member} runs past the end of the file (truncated?)")
    return TensorRecord(
        name=name, path=path, dtype=dtype, shape=pending.shape, strides=pending.strides,
        offset=data_start + offset, storage_begin=data_start, storage_end=data_start + info.file_size,
    )  # fmt: skip


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
