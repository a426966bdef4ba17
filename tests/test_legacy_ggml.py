"""Legacy GGML files (ggml's examples/gpt-j) convert to GGUF and give the model they came from.

The fixtures are written by tests/legacy_ggml_writer.py, which was checked once to write
byte for byte what ggml's convert-h5-to-ggml.py (f16) and gpt-j-quantize (q4_0, q5_1, q8_0)
write for the same checkpoint (ggml 0.20.2's examples, built from the libggml-python sdist).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from gptj_ggml import Model, ModelFormatError
from gptj_ggml.convert import convert_checkpoint
from gptj_ggml.errors import ConversionError

from legacy_ggml_writer import write_legacy_gptj
from quant_fixtures import PROMPT, tensor_bytes

CHECKPOINT = {"fmt": "bin-f16", "n_embd": 64, "n_head": 4, "rotary_dim": 8, "n_layer": 2}


@pytest.fixture(scope="module")
def legacy_file(tiny_gptj_dir, tiny_gptj_reference, tmp_path_factory):
    """Factory: ``legacy_file(ftype) -> path`` of the tiny checkpoint in the legacy format."""
    folder = tiny_gptj_dir(**CHECKPOINT)
    config = json.loads((folder / "config.json").read_text())
    cache = {}

    def write(ftype: str):
        if ftype not in cache:
            path = tmp_path_factory.mktemp("legacy") / f"ggml-model-{ftype}.bin"
            cache[ftype] = write_legacy_gptj(path, tiny_gptj_reference(**CHECKPOINT), config, folder, ftype)
        return cache[ftype]

    return write


@pytest.fixture(scope="module")
def converted(legacy_file, tmp_path_factory):
    cache = {}

    def convert(ftype: str):
        if ftype not in cache:
            cache[ftype] = convert_checkpoint(legacy_file(ftype), tmp_path_factory.mktemp("gguf") / f"{ftype}.gguf")
        return cache[ftype]

    return convert


@pytest.fixture(scope="module")
def hf_f16(tiny_gptj_dir, tmp_path_factory):
    return convert_checkpoint(tiny_gptj_dir(**CHECKPOINT), tmp_path_factory.mktemp("hf") / "f16.gguf")


def test_legacy_f16_converts_to_the_same_tensors_as_the_checkpoint(converted, hf_f16):
    assert tensor_bytes(converted("f16")) == tensor_bytes(hf_f16)


def test_legacy_f16_gives_the_checkpoints_logits(converted, hf_f16):
    np.testing.assert_array_equal(Model(converted("f16")).logits(PROMPT[:40]), Model(hf_f16).logits(PROMPT[:40]))


def test_legacy_q4_0_keeps_its_blocks_and_equals_a_pure_q4_0_quantization(converted, tiny_gptj_dir, tmp_path):
    pure = convert_checkpoint(tiny_gptj_dir(**CHECKPOINT), tmp_path / "pure.gguf", outtype="q4_0", pure=True)
    assert tensor_bytes(converted("q4_0")) == tensor_bytes(pure)
    assert Model(converted("q4_0")).metadata["general.file_type"] == 2


def test_legacy_vocabulary_tokenizes_like_the_checkpoint_without_merges(converted, hf_f16):
    legacy, reference = Model(converted("f16")), Model(hf_f16)
    text = "Hello world! It's GPT-J's <|endoftext|> tokenizer: naïve café, 日本語, 1234567."
    for special in (False, True):
        assert legacy.tokenize(text, special) == reference.tokenize(text, special)
    assert legacy.tokenizer.eos_id == 50256


def test_loading_a_legacy_file_says_to_convert_it(legacy_file):
    with pytest.raises(ModelFormatError, match="a legacy GGML file, not GGUF: convert it with `gptj-ggml convert`"):
        Model(legacy_file("f16"))


def test_legacy_q4_0_cannot_become_another_type(legacy_file, tmp_path):
    with pytest.raises(ConversionError, match=r"tensor transformer\.wte\.weight is q4_0; it cannot become q8_0"):
        convert_checkpoint(legacy_file("q4_0"), tmp_path / "x.gguf", outtype="q8_0")
    assert list(tmp_path.iterdir()) == []


def test_legacy_f16_quantizes_while_converting(legacy_file, tmp_path, tiny_gptj_dir):
    ours = convert_checkpoint(legacy_file("f16"), tmp_path / "q8_0.gguf", outtype="q8_0")
    reference = convert_checkpoint(tiny_gptj_dir(**CHECKPOINT), tmp_path / "ref.gguf", outtype="q8_0")
    assert tensor_bytes(ours) == tensor_bytes(reference)


def _corrupt(source, target, offset: int, value: bytes):
    data = bytearray(source.read_bytes())
    data[offset : offset + len(value)] = value
    target.write_bytes(bytes(data))
    return target


# Header: magic (4) + 7 int32 hyper-parameters (28) + token count (4): token 0's length is at 36.
def test_corrupt_vocabulary_length_is_a_clear_error(legacy_file, tmp_path):
    bad = _corrupt(legacy_file("f16"), tmp_path / "bad.bin", 36 + 4 + 1, struct.pack("<I", 0x7FFFFFF0))
    with pytest.raises(ConversionError, match=r"bad\.bin: corrupt vocabulary: token 1 has an absurd length of 2147483632 bytes"):
        convert_checkpoint(bad, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_corrupt_vocabulary_count_is_a_clear_error(legacy_file, tmp_path):
    bad = _corrupt(legacy_file("f16"), tmp_path / "bad.bin", 32, struct.pack("<i", 60000))
    with pytest.raises(ConversionError, match="corrupt vocabulary: it says it has 60000 tokens, the model has 50400"):
        convert_checkpoint(bad, tmp_path / "out.gguf")


def test_truncated_tensor_is_a_clear_error(legacy_file, tmp_path):
    data = legacy_file("q4_0").read_bytes()
    bad = tmp_path / "cut.bin"
    bad.write_bytes(data[:-1000])
    with pytest.raises(ConversionError, match=r"cut\.bin: tensor lm_head\.bias is truncated: its data needs 201600 bytes"):
        convert_checkpoint(bad, tmp_path / "out.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.bin"]


def test_old_quantization_version_is_refused(legacy_file, tmp_path):
    bad = _corrupt(legacy_file("q4_0"), tmp_path / "v1.bin", 28, struct.pack("<i", 1002))
    with pytest.raises(ConversionError, match="in quantization version 1 .* only version 2 is supported"):
        convert_checkpoint(bad, tmp_path / "out.gguf")
