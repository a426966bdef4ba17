"""The GGUF metadata uses llama.cpp's gptj keys and types."""

from __future__ import annotations

import gguf
import pytest

UINT32, FLOAT32 = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32


def _field(reader: gguf.GGUFReader, key: str):
    field = reader.fields[key]
    return field.types[0], field.contents()


@pytest.mark.parametrize(
    ("key", "vtype", "value"),
    [
        ("gptj.context_length", UINT32, 256),
        ("gptj.embedding_length", UINT32, 64),
        ("gptj.feed_forward_length", UINT32, 256),
        ("gptj.block_count", UINT32, 2),
        ("gptj.attention.head_count", UINT32, 4),
        ("gptj.rope.dimension_count", UINT32, 8),
        ("gptj.vocab_size", UINT32, 50400),
        ("general.file_type", UINT32, int(gguf.LlamaFileType.MOSTLY_F16)),
        ("tokenizer.ggml.bos_token_id", UINT32, 50256),
        ("tokenizer.ggml.eos_token_id", UINT32, 50256),
        ("general.architecture", gguf.GGUFValueType.STRING, "gptj"),
        ("tokenizer.ggml.model", gguf.GGUFValueType.STRING, "gpt2"),
        ("tokenizer.ggml.pre", gguf.GGUFValueType.STRING, "gpt-2"),
    ],
)
def test_metadata_value(tiny_gptj_gguf, key, vtype, value):
    assert _field(tiny_gptj_gguf("f16"), key) == (vtype, value)


def test_layer_norm_epsilon_is_float32(tiny_gptj_gguf):
    vtype, value = _field(tiny_gptj_gguf("f16"), "gptj.attention.layer_norm_epsilon")
    assert vtype == FLOAT32
    assert value == pytest.approx(1e-5)


def test_file_type_of_f32_output(tiny_gptj_gguf):
    assert _field(tiny_gptj_gguf("f32"), "general.file_type") == (UINT32, 0)


def test_rotary_dim_defaults_to_head_dim(tiny_gptj_gguf):
    reader = tiny_gptj_gguf("f32", fmt="safetensors", n_inner=96, n_layer=1, config_overrides={"rotary_dim": None})
    assert _field(reader, "gptj.rope.dimension_count") == (UINT32, 16)
    assert _field(reader, "gptj.feed_forward_length") == (UINT32, 96)


def test_general_name_is_set(tiny_gptj_gguf):
    vtype, name = _field(tiny_gptj_gguf("f16"), "general.name")
    assert vtype == gguf.GGUFValueType.STRING and name
