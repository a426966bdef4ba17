"""Opening model files: good ones load with their hyper-parameters, bad ones raise a clear
Python exception naming the problem (never a crash or an abort)."""

from __future__ import annotations

import shutil
import struct

import gguf
import numpy as np
import pytest

from gptj_ggml import ContextFullError, Model, ModelFormatError

from gguf_edit import rewrite_gguf

U32 = gguf.GGUFValueType.UINT32
STRING = gguf.GGUFValueType.STRING


@pytest.fixture(scope="module")
def good_model(tiny_model_path):
    return tiny_model_path("f16")


def test_model_reports_its_hyper_parameters(good_model):
    model = Model(good_model, n_ctx=128, n_threads=1)
    assert (model.n_vocab, model.n_embd, model.n_layer, model.n_ctx, model.n_threads) == (50400, 64, 2, 128, 1)
    meta = model.metadata
    assert meta["general.architecture"] == "gptj"
    assert meta["gptj.rope.dimension_count"] == 8
    assert meta["gptj.attention.head_count"] == 4
    assert "n_layer=2" in repr(model) and "f16" in repr(model)


def test_n_ctx_defaults_to_the_training_context(good_model):
    assert Model(good_model).n_ctx == 256


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here.gguf"):
        Model(tmp_path / "nothing-here.gguf")


def test_a_checkpoint_folder_raises_file_not_found_with_the_convert_command(tiny_gptj_dir, tmp_path, monkeypatch):
    shutil.copytree(tiny_gptj_dir(), tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^models/tiny: a Hugging Face checkpoint folder") as raised:
        Model("models/tiny")
    assert str(raised.value).endswith("convert it first: gptj-ggml convert models/tiny -o models/tiny.gguf")


def test_a_folder_that_is_no_checkpoint_raises_file_not_found_naming_its_gguf_files(tmp_path):
    (tmp_path / "model.gguf").touch()
    with pytest.raises(FileNotFoundError, match=r"a folder, not a GGUF model file; .* \(it holds model\.gguf\)"):
        Model(tmp_path)


def test_a_hub_id_raises_file_not_found_saying_nothing_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as raised:
        Model("EleutherAI/gpt-j-6b")
    message = str(raised.value)
    assert message.startswith("EleutherAI/gpt-j-6b: not a local file, and gptj_ggml does not download models")
    assert "download the checkpoint" in message
    assert message.endswith("then convert it: gptj-ggml convert gpt-j-6b -o gpt-j-6b.gguf")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "too short"),
        (np.random.default_rng(0).bytes(4096), "not a GGUF file"),
        (b"GGUF" + np.random.default_rng(1).bytes(4096), "malformed GGUF"),
        (struct.pack("<I", 0x67676D6C) + b"\0" * 64, "legacy GGML file"),
        (b"PK\x03\x04" + b"\0" * 64, "convert it"),
    ],
    ids=["empty", "random-bytes", "gguf-magic-then-garbage", "legacy-ggml", "zip"],
)
def test_files_that_are_not_gguf_raise(tmp_path, content, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=message):
        Model(path)


@pytest.mark.parametrize("keep_fraction", [0.999, 0.5, 0.01])
def test_truncated_file_raises(good_model, tmp_path, keep_fraction):
    data = good_model.read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(ModelFormatError, match="truncated|malformed"):
        Model(path)


def test_other_architecture_is_refused_by_name(good_model, tmp_path):
    path = rewrite_gguf(good_model, tmp_path / "llama.gguf", set_kv={"general.architecture": ("llama", STRING)})
    with pytest.raises(ModelFormatError, match="'llama'"):
        Model(path)


def test_missing_tensor_is_named(good_model, tmp_path):
    path = rewrite_gguf(good_model, tmp_path / "no-v.gguf", drop_tensors=("blk.1.attn_v.weight",))
    with pytest.raises(ModelFormatError, match=r"missing tensor 'blk\.1\.attn_v\.weight'"):
        Model(path)


def test_tensor_of_the_wrong_shape_is_named_with_both_shapes(good_model, tmp_path):
    def shrink(name, data):
        return data[:32].copy() if name == "blk.0.ffn_up.weight" else data

    path = rewrite_gguf(good_model, tmp_path / "bad-shape.gguf", change_tensor=shrink)
    with pytest.raises(ModelFormatError, match=r"'blk\.0\.ffn_up\.weight' has shape \[64, 32\], expected \[64, 256\]"):
        Model(path)


def test_tensor_of_the_wrong_type_is_named(good_model, tmp_path):
    def to_f16(name, data):
        return data.astype(np.float16) if name == "output_norm.bias" else data

    path = rewrite_gguf(good_model, tmp_path / "bad-type.gguf", change_tensor=to_f16)
    with pytest.raises(ModelFormatError, match=r"'output_norm\.bias' has type f16, expected f32"):
        Model(path)


def test_missing_hyper_parameter_is_named(good_model, tmp_path):
    path = rewrite_gguf(good_model, tmp_path / "no-layers.gguf", drop_kv=("gptj.block_count",))
    with pytest.raises(ModelFormatError, match="gptj.block_count"):
        Model(path)


def test_hyper_parameter_of_the_wrong_type_is_named(good_model, tmp_path):
    # ggml's own typed getter would abort() the process here.
    path = rewrite_gguf(good_model, tmp_path / "str-layers.gguf", set_kv={"gptj.block_count": ("two", STRING)})
    with pytest.raises(ModelFormatError, match="'gptj.block_count' should be an integer"):
        Model(path)


def test_hyper_parameters_that_disagree_with_the_tensors_raise(good_model, tmp_path):
    path = rewrite_gguf(good_model, tmp_path / "3-layers.gguf", set_kv={"gptj.block_count": (3, U32)})
    with pytest.raises(ModelFormatError, match=r"missing tensor 'blk\.2\."):
        Model(path)


def test_rotary_dim_larger_than_a_head_raises(good_model, tmp_path):
    path = rewrite_gguf(good_model, tmp_path / "rot.gguf", set_kv={"gptj.rope.dimension_count": (32, U32)})
    with pytest.raises(ModelFormatError, match="rope.dimension_count"):
        Model(path)


def test_a_loaded_model_survives_its_file_being_replaced(good_model, tmp_path):
    path = tmp_path / "copy.gguf"
    shutil.copy(good_model, path)
    model = Model(path)
    expected = model.logits([1, 2, 3])
    path.unlink()  # the mapping keeps the data alive
    np.testing.assert_array_equal(model.logits([1, 2, 3]), expected)


def test_token_ids_out_of_range_raise_value_error(good_model):
    model = Model(good_model)
    with pytest.raises(ValueError, match="token id 50400 is out of range"):
        model.logits([1, 50400])
    with pytest.raises(ValueError, match="out of range"):
        list(model.generate([-1], max_tokens=2))


def test_evaluating_past_the_context_raises_context_full(good_model):
    model = Model(good_model, n_ctx=16)
    with pytest.raises(ContextFullError, match="n_ctx 16"):
        model.logits(list(range(17)))
    assert model.logits(list(range(16))).shape == (16, 50400)  # the session is still usable

