"""Write PyTorch zip checkpoints whose pickle says exactly what a test wants (test infrastructure).

``torch.save`` cannot write a tensor with negative strides, an offset past its storage or a
storage too small for its view; attackers can. The pickle is assembled opcode by opcode in the
shape ``torch.save`` gives it (protocol 2: an OrderedDict of ``_rebuild_tensor_v2`` calls on
persistent-id storages), from the format's description (Python's ``pickletools`` docs), and the
zip holds ``<prefix>/data.pkl``, ``<prefix>/byteorder`` and ``<prefix>/data/<key>`` as torch writes them.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PickledTensor:
    """One tensor as the pickle describes it. ``numel`` is the persistent id's element count (None: omitted)."""

    storage_key: str
    size: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int = 0
    storage_class: str = "FloatStorage"
    numel: int | None = None
    extra: dict = field(default_factory=dict)


def pickle_int(value: int) -> bytes:
    """The opcode pickle uses for an int: BININT for 32-bit values, LONG1 otherwise (any size)."""
    if -(2**31) <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    n_bytes = (value.bit_length() + 8) // 8
    return pickle.LONG1 + bytes([n_bytes]) + value.to_bytes(n_bytes, "little", signed=True)


def pickle_str(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def pickle_global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _tuple(items: list[bytes]) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def state_dict_pickle(tensors: dict[str, PickledTensor]) -> bytes:
    """The data.pkl of a state dict holding ``tensors``."""
    out = [pickle.PROTO + b"\x02", pickle_global("collections", "OrderedDict"), pickle.EMPTY_TUPLE, pickle.REDUCE]
    out.append(pickle.MARK)
    for name, tensor in tensors.items():
        pid = [
            pickle_str("storage"),
            pickle_global("torch", tensor.storage_class),
            pickle_str(tensor.storage_key),
            pickle_str("cpu"),
        ]
        if tensor.numel is not None:
            pid.append(pickle_int(tensor.numel))
        args = [
            _tuple(pid) + pickle.BINPERSID,
            pickle_int(tensor.storage_offset),
            _tuple([pickle_int(size) for size in tensor.size]),
            _tuple([pickle_int(stride) for stride in tensor.stride]),
            pickle.NEWFALSE,
            pickle_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE,
        ]
        out += [pickle_str(name), pickle_global("torch._utils", "_rebuild_tensor_v2"), _tuple(args), pickle.REDUCE]
    out += [pickle.SETITEMS, pickle.STOP]
    return b"".join(out)


def write_torch_zip(
    path: Path,
    data_pkl: bytes,
    storages: dict[str, bytes],
    *,
    prefix: str = "archive",
    compression: int = zipfile.ZIP_STORED,
    byteorder: bytes = b"little",
) -> Path:
    """A torch-style zip checkpoint with this pickle and these storages (raw little-endian bytes)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr(f"{prefix}/data.pkl", data_pkl)
        archive.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in storages.items():
            archive.writestr(f"{prefix}/data/{key}", data)
        archive.writestr(f"{prefix}/version", b"3\n")
    return path


def read_torch_zip_members(path: Path) -> tuple[str, dict[str, bytes]]:
    """The (prefix, {member name: bytes}) of a zip written by torch.save, to rewrite it."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    prefix = next(name for name in members if name.endswith("/data.pkl"))[: -len("/data.pkl")]
    return prefix, members


def rewrite_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path
