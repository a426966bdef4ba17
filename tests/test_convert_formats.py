"""Every checkpoint format converts to a GGUF whose tensors equal the transformers weights."""

from __future__ import annotations

import os
import stat

import gguf
import numpy as np
import pytest

from gptj_ggml.convert import convert_checkpoint, expected_tensors, read_hparams

from checkpoints import FORMATS


def _gguf_tensors(reader: gguf.GGUFReader) -> dict[str, gguf.ReaderTensor]:
    return {tensor.name: tensor for tensor in reader.tensors}


@pytest.mark.parametrize("fmt", FORMATS)
def test_f32_tensors_equal_the_checkpoint_exactly(fmt, tiny_gptj_dir, tiny_gptj_reference, tiny_gptj_gguf):
    folder = tiny_gptj_dir(fmt=fmt)
    reference = tiny_gptj_reference(fmt=fmt)
    tensors = _gguf_tensors(tiny_gptj_gguf("f32", fmt=fmt))

    for spec in expected_tensors(read_hparams(folder)):
        tensor = tensors[spec.gguf_name]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32, spec.gguf_name
        np.testing.assert_array_equal(tensor.data, reference[spec.hf_name].float().numpy(), err_msg=spec.gguf_name)


@pytest.mark.parametrize("fmt", ["safetensors", "bin-f16", "safetensors-bf16"])
def test_f16_matrices_are_float16_and_vectors_stay_float32(fmt, tiny_gptj_dir, tiny_gptj_reference, tiny_gptj_gguf):
    folder = tiny_gptj_dir(fmt=fmt)
    reference = tiny_gptj_reference(fmt=fmt)
    tensors = _gguf_tensors(tiny_gptj_gguf("f16", fmt=fmt))

    for spec in expected_tensors(read_hparams(folder)):
        tensor = tensors[spec.gguf_name]
        expected = reference[spec.hf_name].float().numpy()
        if len(spec.shape) == 2:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F16, spec.gguf_name
            expected = expected.astype(np.float16)
        else:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32, spec.gguf_name
        np.testing.assert_array_equal(tensor.data, expected, err_msg=spec.gguf_name)


def test_gguf_holds_exactly_the_gptj_tensors_and_drops_attention_buffers(tiny_gptj_dir, tiny_gptj_gguf):
    folder = tiny_gptj_dir(fmt="bin-f16")
    names = set(_gguf_tensors(tiny_gptj_gguf("f16", fmt="bin-f16")))

    assert names == {spec.gguf_name for spec in expected_tensors(read_hparams(folder))}
    assert len(names) == 1 + 10 * 2 + 4


def test_gguf_shapes_are_in_ggml_order(tiny_gptj_gguf):
    tensors = _gguf_tensors(tiny_gptj_gguf("f16"))

    # ggml lists the fastest-varying dimension first: (n_embd, n_inner) for fc_in's (n_inner, n_embd).
    assert list(tensors["blk.0.ffn_up.weight"].shape) == [64, 256]
    assert list(tensors["token_embd.weight"].shape) == [64, 50400]


def test_rotary_dim_null_and_explicit_n_inner(tiny_gptj_reference, tiny_gptj_gguf):
    kwargs = {"fmt": "safetensors", "n_inner": 96, "n_layer": 1, "config_overrides": {"rotary_dim": None}}
    reference = tiny_gptj_reference(**kwargs)
    tensors = _gguf_tensors(tiny_gptj_gguf("f32", **kwargs))

    np.testing.assert_array_equal(
        tensors["blk.0.ffn_down.weight"].data, reference["transformer.h.0.mlp.fc_out.weight"].numpy()
    )


def test_the_written_file_has_the_mode_the_umask_gives(tiny_gptj_dir, tmp_path):
    previous = os.umask(0o027)
    try:
        out = convert_checkpoint(tiny_gptj_dir(fmt="safetensors"), tmp_path / "model.gguf")
    finally:
        os.umask(previous)

    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~0o027  # not the temporary file's 0o600
