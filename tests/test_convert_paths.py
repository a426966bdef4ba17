"""A checkpoint folder can only make the converter read files inside it.

A shard index naming an absolute path or ``../x``, or a shard, config or tokenizer file that is a
symlink to somewhere else, is refused before the file is opened. The one way out allowed is the
Hugging Face Hub cache's layout, whose snapshot folders hold symlinks into the repository's blobs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from gptj_ggml import Model
from gptj_ggml.convert import convert_checkpoint
from gptj_ggml.errors import ConversionError

from fuzz.fixtures import config, state_dict, write_tokenizer

SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def _sharded_checkpoint(folder: Path) -> Path:
    """A tiny checkpoint in two safetensors shards with model.safetensors.index.json."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config()))
    write_tokenizer(folder)
    weights = {name: value.astype(np.float16) for name, value in state_dict().items()}
    names = list(weights)
    halves = {SHARDS[0]: names[: len(names) // 2], SHARDS[1]: names[len(names) // 2 :]}
    for shard, shard_names in halves.items():
        safetensors.numpy.save_file({name: weights[name] for name in shard_names}, folder / shard)
    weight_map = {name: shard for shard, shard_names in halves.items() for name in shard_names}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.fixture
def sharded(tmp_path) -> Path:
    return _sharded_checkpoint(tmp_path / "checkpoint")


def _point_index_at(folder: Path, shard_name: str) -> None:
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {
        name: shard_name if shard == SHARDS[1] else shard for name, shard in index["weight_map"].items()
    }
    index_path.write_text(json.dumps(index))


def test_a_sharded_checkpoint_converts(sharded, tmp_path):
    Model(convert_checkpoint(sharded, tmp_path / "model.gguf"))


@pytest.mark.parametrize(
    ("make_name", "match"),
    [
        (lambda outside: str(outside), r"file name '.*' \(listed in .*index\.json\) is not a relative path inside"),
        (lambda outside: f"../{outside.name}", r"\(listed in model\.safetensors\.index\.json\) leads outside the"),
        (lambda outside: f"sub/../../{outside.name}", r"\(listed in model\.safetensors\.index\.json\) leads outside"),
    ],
)
def test_a_shard_index_naming_a_file_outside_the_folder_is_refused(sharded, tmp_path, make_name, match):
    # A valid shard outside the folder: were it read, the conversion would succeed.
    outside = Path(shutil.move(sharded / SHARDS[1], tmp_path / SHARDS[1]))
    _point_index_at(sharded, make_name(outside))

    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(sharded, tmp_path / "model.gguf")


def test_the_index_cannot_reach_system_files(sharded, tmp_path):
    _point_index_at(sharded, "/etc/passwd")
    with pytest.raises(
        ConversionError, match=r"file name '/etc/passwd' \(listed in .*\) is not a relative path inside"
    ):
        convert_checkpoint(sharded, tmp_path / "model.gguf")


def test_a_path_that_goes_out_and_back_in_stays_inside(sharded, tmp_path):
    _point_index_at(sharded, f"../{sharded.name}/{SHARDS[1]}")
    Model(convert_checkpoint(sharded, tmp_path / "model.gguf"))


def test_a_shard_that_is_a_symlink_out_of_the_folder_is_refused(sharded, tmp_path):
    outside = Path(shutil.move(sharded / SHARDS[1], tmp_path / "elsewhere.safetensors"))
    (sharded / SHARDS[1]).symlink_to(outside)

    with pytest.raises(
        ConversionError, match=rf"{SHARDS[1]} \(listed in .*\) leads outside the checkpoint folder .* \(to {outside}\)"
    ):
        convert_checkpoint(sharded, tmp_path / "model.gguf")


def test_a_symlink_to_another_file_inside_the_folder_is_followed(sharded, tmp_path):
    moved = Path(shutil.move(sharded / SHARDS[1], sharded / "renamed.safetensors"))
    (sharded / SHARDS[1]).symlink_to(moved.name)
    Model(convert_checkpoint(sharded, tmp_path / "model.gguf"))


@pytest.mark.parametrize("file_name", ["config.json", "tokenizer.json", "model.safetensors.index.json"])
def test_a_config_or_tokenizer_file_that_is_a_symlink_out_of_the_folder_is_refused(sharded, tmp_path, file_name):
    outside = Path(shutil.move(sharded / file_name, tmp_path / file_name))
    (sharded / file_name).symlink_to(outside)

    with pytest.raises(ConversionError, match=rf"{file_name} leads outside the checkpoint folder"):
        convert_checkpoint(sharded, tmp_path / "model.gguf")


def test_the_hub_cache_layout_of_snapshot_symlinks_into_blobs_is_followed(tmp_path):
    # <cache>/models--org--name/{blobs/<hash>, snapshots/<revision>/<file> -> ../../blobs/<hash>}
    source = _sharded_checkpoint(tmp_path / "source")
    repo = tmp_path / "hub" / "models--org--tiny-gptj"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, path in enumerate(sorted(source.iterdir())):
        blob = repo / "blobs" / f"{i:040x}"
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))

    Model(convert_checkpoint(snapshot, tmp_path / "model.gguf"))


def test_a_snapshot_symlink_elsewhere_than_its_blobs_is_refused(tmp_path):
    source = _sharded_checkpoint(tmp_path / "source")
    snapshot = tmp_path / "hub" / "models--org--tiny-gptj" / "snapshots" / "0123abcd"
    shutil.copytree(source, snapshot)
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(source / "config.json")

    with pytest.raises(ConversionError, match=r"config\.json leads outside the checkpoint folder"):
        convert_checkpoint(snapshot, tmp_path / "model.gguf")


@pytest.mark.parametrize(
    ("weight_map", "match"),
    [
        ([], "not a valid shard index"),
        ({"transformer.wte.weight": 5}, "gives tensor transformer.wte.weight the shard 5, not a file name"),
        ({"transformer.wte.weight": ["a"]}, r"the shard \['a'\]|the shard a list"),
        ({"transformer.wte.weight": ""}, "is not a relative path inside the folder"),
        ({"transformer.wte.weight": "a\u0000b"}, "is not a relative path inside the folder"),
    ],
)
def test_a_malformed_weight_map_is_refused(sharded, tmp_path, weight_map, match):
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(sharded, tmp_path / "model.gguf")


def test_a_tensor_in_two_shards_is_refused(sharded, tmp_path):
    first = safetensors.numpy.load_file(sharded / SHARDS[0])
    second = safetensors.numpy.load_file(sharded / SHARDS[1])
    duplicated = next(iter(first))
    safetensors.numpy.save_file({**second, duplicated: first[duplicated]}, sharded / SHARDS[1])

    with pytest.raises(ConversionError, match=rf"tensor {duplicated} is also in {SHARDS[0]}"):
        convert_checkpoint(sharded, tmp_path / "model.gguf")


def test_a_fifo_named_like_a_checkpoint_file_is_not_opened(sharded, tmp_path):
    (sharded / "tokenizer_config.json").unlink()
    os.mkfifo(sharded / "tokenizer_config.json")  # opening it would block forever

    Model(convert_checkpoint(sharded, tmp_path / "model.gguf"))
