"""Find the weight files of a Hugging Face checkpoint folder and list its tensors.

A folder holds ``model.safetensors`` or ``pytorch_model.bin``, or shards of either named
by the ``weight_map`` of ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``.
Safetensors is preferred when both are present (it needs no unpickling).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import ConversionError
from .safetensors_file import read_safetensors
from .tensor_record import TensorRecord
from .torch_zip import read_torch_zip

_FileReader = Callable[[Path], dict[str, TensorRecord]]

# (single file, shard index, reader), in order of preference.
_LAYOUTS: tuple[tuple[str, str, _FileReader], ...] = (
    ("model.safetensors", "model.safetensors.index.json", read_safetensors),
    ("pytorch_model.bin", "pytorch_model.bin.index.json", read_torch_zip),
)


def read_checkpoint(folder: Path) -> dict[str, TensorRecord]:
    """Every tensor of the checkpoint in ``folder``, by Hugging Face name, as lazy records."""
    folder = Path(folder)
    for single_name, index_name, reader in _LAYOUTS:
        if (folder / single_name).is_file():
            return reader(folder / single_name)
        if (folder / index_name).is_file():
            return _read_shards(folder / index_name, reader)
    expected = ", ".join(name for layout in _LAYOUTS for name in layout[:2])
    raise ConversionError(f"{folder}: no weights found (expected one of {expected})")


def _read_shards(index_path: Path, reader: _FileReader) -> dict[str, TensorRecord]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConversionError(f"{index_path}: not a valid shard index (no weight_map)") from error
    records: dict[str, TensorRecord] = {}
    for shard_name in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard_name
        if not shard_path.is_file():
            raise ConversionError(f"{shard_path}: shard listed in {index_path.name} is missing")
        records.update(reader(shard_path))
    for name, shard_name in weight_map.items():
        if name not in records:
            raise ConversionError(f"{index_path.parent / shard_name}: tensor {name} listed in the index is missing")
    return records
