"""Find the weight files of a Hugging Face checkpoint folder and list its tensors.

A folder holds ``model.safetensors`` or ``pytorch_model.bin``, or shards of either named
by the ``weight_map`` of ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``.
Safetensors is preferred when both are present (it needs no unpickling). Every file read must
lie inside the folder (:func:`.source_files.folder_file`): an index naming ``/etc/passwd`` or
``../x``, or a shard that is a symlink to elsewhere, is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ConversionError
from .safetensors_file import read_safetensors
from .source_files import MAX_SHARD_INDEX_BYTES, describe, display_name, folder_file, is_regular_file, read_json
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
        single = folder_file(folder, single_name)
        if is_regular_file(single):
            return reader(single)
        index = folder_file(folder, index_name)
        if is_regular_file(index):
            return _read_shards(folder, index, reader)
    expected = ", ".join(name for layout in _LAYOUTS for name in layout[:2])
    raise ConversionError(f"{folder}: no weights found (expected one of {expected})")


def _read_shards(folder: Path, index_path: Path, reader: _FileReader) -> dict[str, TensorRecord]:
    weight_map = _weight_map(index_path)
    records: dict[str, TensorRecord] = {}
    found_in: dict[str, str] = {}
    for shard_name in sorted(set(weight_map.values())):
        shard_path = folder_file(folder, shard_name, listed_in=index_path)
        if not is_regular_file(shard_path):
            raise ConversionError(f"{shard_path}: shard listed in {index_path.name} is missing")
        for name, record in reader(shard_path).items():
            if name in records:
                raise ConversionError(
                    f"{shard_path}: tensor {display_name(name)} is also in {found_in[name]} (which one is meant?)"
                )
            records[name] = record
            found_in[name] = shard_name
    for name, shard_name in weight_map.items():
        if name not in records:
            raise ConversionError(f"{folder / shard_name}: tensor {display_name(name)} listed in the index is missing")
    return records


def _weight_map(index_path: Path) -> dict[str, str]:
    index = read_json(index_path, MAX_SHARD_INDEX_BYTES, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise ConversionError(f"{index_path}: not a valid shard index (no weight_map)")
    for name, shard_name in weight_map.items():
        if not isinstance(shard_name, str):
            raise ConversionError(
                f"{index_path}: weight_map gives tensor {display_name(name)} the shard {describe(shard_name)}, not a file name"
            )
    return weight_map
