"""Bad checkpoints give one ConversionError naming the culprit, and leave nothing at the output path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gptj_ggml.convert import convert_checkpoint
from gptj_ggml.errors import ConversionError, GptjError


@pytest.fixture
def checkpoint_copy(tiny_gptj_dir, tmp_path):
    """Factory: a private copy of a tiny checkpoint, safe to damage."""

    def copy(**kwargs) -> Path:
        return Path(shutil.copytree(tiny_gptj_dir(**kwargs), tmp_path / "checkpoint"))

    return copy


def _convert_fails(src: Path, tmp_path: Path, match: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(src, out_dir / "model.gguf")
    assert list(out_dir.iterdir()) == [], "a failed conversion must leave no file (final or temporary)"


@pytest.mark.parametrize("fmt", ["sharded-safetensors", "sharded-bin"])
def test_missing_shard(checkpoint_copy, tmp_path, fmt):
    src = checkpoint_copy(fmt=fmt)
    shard = min(src.glob("*-00002-of-00003.*"))
    shard.unlink()
    _convert_fails(src, tmp_path, match=shard.name)


@pytest.mark.parametrize("fmt", ["sharded-safetensors", "sharded-bin"])
def test_truncated_shard(checkpoint_copy, tmp_path, fmt):
    src = checkpoint_copy(fmt=fmt)
    shard = min(src.glob("*-00003-of-00003.*"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    _convert_fails(src, tmp_path, match=shard.name)


@pytest.mark.parametrize("fmt", ["safetensors", "bin-f16"])
def test_truncated_single_file(checkpoint_copy, tmp_path, fmt):
    src = checkpoint_copy(fmt=fmt)
    weights = next(src.glob("model.safetensors")) if fmt == "safetensors" else src / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:-1000])
    _convert_fails(src, tmp_path, match=weights.name)


def test_missing_tensor(checkpoint_copy, tmp_path):
    import safetensors.torch

    src = checkpoint_copy(fmt="safetensors")
    state = safetensors.torch.load_file(src / "model.safetensors")
    del state["transformer.h.1.mlp.fc_out.bias"]
    safetensors.torch.save_file(state, src / "model.safetensors")
    _convert_fails(src, tmp_path, match=r"transformer\.h\.1\.mlp\.fc_out\.bias")


def test_unexpected_tensor(checkpoint_copy, tmp_path):
    import safetensors.torch
    import torch

    src = checkpoint_copy(fmt="safetensors")
    state = safetensors.torch.load_file(src / "model.safetensors")
    state["transformer.h.0.attn.qkv_proj.weight"] = torch.zeros(3, 3)
    safetensors.torch.save_file(state, src / "model.safetensors")
    _convert_fails(src, tmp_path, match=r"transformer\.h\.0\.attn\.qkv_proj\.weight")


def test_wrong_shape_names_tensor_and_shapes(checkpoint_copy, tmp_path):
    src = checkpoint_copy(fmt="safetensors")
    config = json.loads((src / "config.json").read_text())
    config["n_inner"] = 128
    (src / "config.json").write_text(json.dumps(config))
    _convert_fails(src, tmp_path, match=r"transformer\.h\.0\.mlp\.fc_in\.weight has shape \[256, 64\], expected \[128, 64\]")


def test_config_of_another_architecture(checkpoint_copy, tmp_path):
    src = checkpoint_copy(fmt="safetensors")
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "gpt2"
    (src / "config.json").write_text(json.dumps(config))
    _convert_fails(src, tmp_path, match=r"config\.json: model_type is 'gpt2'")


def test_missing_config(checkpoint_copy, tmp_path):
    src = checkpoint_copy(fmt="safetensors")
    (src / "config.json").unlink()
    _convert_fails(src, tmp_path, match=r"config\.json: missing")


def test_no_weights(checkpoint_copy, tmp_path):
    src = checkpoint_copy(fmt="safetensors")
    (src / "model.safetensors").unlink()
    _convert_fails(src, tmp_path, match="no weights found")


def test_interrupt_while_writing_leaves_nothing(tiny_gptj_dir, tmp_path, monkeypatch):
    from gptj_ggml.convert import tensor_record

    def interrupted(self, first, count):
        raise KeyboardInterrupt

    monkeypatch.setattr(tensor_record.TensorRecord, "_read_elements", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(tiny_gptj_dir(fmt="safetensors"), tmp_path / "model.gguf")
    assert list(tmp_path.iterdir()) == []


def test_conversion_error_is_a_gptj_error_and_a_value_error():
    assert issubclass(ConversionError, GptjError) and issubclass(ConversionError, ValueError)
