"""What the engine checks in a GGUF file before ggml parses it or sizes anything from it: counts
the file cannot hold, duplicate keys and tensor names, strings that are not UTF-8, hyper-parameters
that disagree with the tensors, and paths that are not regular files. Each refusal is a Python
exception naming the file and the key or tensor, in time proportional to the file; none is an
abort, a hang or a UnicodeDecodeError."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import gguf
import pytest

from gptj_ggml import Model, ModelFormatError

from gguf_edit import patch_bytes, rewrite_gguf, value_offset

U32 = gguf.GGUFValueType.UINT32
ARRAY = gguf.GGUFValueType.ARRAY


@pytest.fixture(scope="module")
def good_model(tiny_model_path):
    return tiny_model_path("f16")


@pytest.fixture(scope="module")
def good_bytes(good_model):
    return good_model.read_bytes()


def _write_gguf(path, keys: dict[str, int]) -> None:
    """A GGUF file of u32 keys and no tensors, written by hand (no writer checks anything)."""
    out = bytearray(b"GGUF" + struct.pack("<IqQ", 3, 0, len(keys)))
    for key, value in keys.items():
        encoded = key.encode()
        out += struct.pack("<Q", len(encoded)) + encoded + struct.pack("<II", 4, value)
    path.write_bytes(out)


def test_a_file_with_80000_keys_is_refused_at_once(tmp_path):
    # ggml compares every key with every earlier one: 37 s to refuse this file before.
    path = tmp_path / "many-keys.gguf"
    _write_gguf(path, {f"junk.key.{i:06d}": i for i in range(80_000)})
    started = time.perf_counter()
    with pytest.raises(ModelFormatError, match=r"many-keys\.gguf: .*80000 metadata keys, more than the 4096"):
        Model(path)
    assert time.perf_counter() - started < 1.0


def test_a_metadata_count_beyond_the_file_size_is_refused(good_bytes, good_model, tmp_path):
    path = patch_bytes(good_model, tmp_path / "count.gguf", {16: struct.pack("<Q", 2**62)})
    with pytest.raises(ModelFormatError, match="metadata keys, more than the file's .* bytes can hold"):
        Model(path)


def test_a_tensor_count_beyond_the_file_size_is_refused(good_model, tmp_path):
    path = patch_bytes(good_model, tmp_path / "count.gguf", {8: struct.pack("<Q", 2**40)})
    with pytest.raises(ModelFormatError, match="tensors, more than the file's .* bytes can hold"):
        Model(path)


def test_a_duplicate_key_is_refused_naming_it(good_bytes, good_model, tmp_path):
    # Same length, so the file keeps its layout: bos's key becomes a second eos key.
    bos = good_bytes.find(b"tokenizer.ggml.bos_token_id")
    path = patch_bytes(good_model, tmp_path / "dup.gguf", {bos: b"tokenizer.ggml.eos_token_id"})
    with pytest.raises(ModelFormatError, match=r"dup\.gguf: .*duplicate metadata key 'tokenizer\.ggml\.eos_token_id'"):
        Model(path)


def test_a_duplicate_tensor_name_is_refused_naming_it(good_bytes, good_model, tmp_path):
    at = good_bytes.find(b"blk.0.attn_norm.weight")
    path = patch_bytes(good_model, tmp_path / "dup.gguf", {at: b"blk.1.attn_norm.weight"})
    with pytest.raises(ModelFormatError, match=r"duplicate tensor 'blk\.1\.attn_norm\.weight'"):
        Model(path)


def _first_token(data: bytes) -> int:
    # The array's element type (4 bytes) and length (8), then the first string's length (8).
    return value_offset(data, "tokenizer.ggml.tokens") + 4 + 8 + 8


@pytest.mark.parametrize(
    "where, what",
    [
        (lambda data: data.find(b"general.name") + 7, r"metadata key 1 \('general\\xffname'\) is not valid UTF-8"),
        (
            lambda data: value_offset(data, "tokenizer.ggml.model") + 8,
            r"metadata 'tokenizer\.ggml\.model' is not valid UTF-8",
        ),
        (_first_token, r"metadata 'tokenizer\.ggml\.tokens'\[0\] is not valid UTF-8"),
        (
            lambda data: data.find(b"output_norm.weight") + 11,
            r"tensor \d+ \('output_norm\\xffweight'\) is not valid UTF-8",
        ),
    ],
    ids=["key", "string-value", "token-text", "tensor-name"],
)
def test_invalid_utf8_is_a_model_format_error_naming_the_file_and_key(good_bytes, good_model, tmp_path, where, what):
    # Before, such strings reached Python as a bare UnicodeDecodeError (Model.metadata, tensor_info).
    path = patch_bytes(good_model, tmp_path / "utf8.gguf", {where(good_bytes): b"\xff"})
    with pytest.raises(ModelFormatError, match=r"utf8\.gguf: .*" + what):
        Model(path)


def test_a_block_count_the_tensors_cannot_hold_is_refused_before_anything_is_sized(good_bytes, good_model, tmp_path):
    # A 4-byte edit: ggml_init aborted the process on a context sized for 8,000,000 layers.
    at = value_offset(good_bytes, "gptj.block_count")
    path = patch_bytes(good_model, tmp_path / "layers.gguf", {at: struct.pack("<I", 8_000_000)})
    with pytest.raises(
        ModelFormatError, match=r"'gptj\.block_count' = 8000000 does not fit the file: it holds 25 tensors"
    ):
        Model(path)


def test_gptj_ggml_info_reports_a_bad_block_count_instead_of_aborting(good_bytes, good_model, tmp_path):
    at = value_offset(good_bytes, "gptj.block_count")
    path = patch_bytes(good_model, tmp_path / "layers.gguf", {at: struct.pack("<I", 8_000_000)})
    command = [sys.executable, "-m", "gptj_ggml", "info", str(path)]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    assert result.returncode > 0, result  # an error exit, not a signal
    assert "gptj.block_count" in result.stderr


def test_an_eos_id_beyond_32_bits_is_refused_not_read_as_none(good_bytes, good_model, tmp_path):
    at = value_offset(good_bytes, "tokenizer.ggml.eos_token_id")
    path = patch_bytes(good_model, tmp_path / "eos.gguf", {at: struct.pack("<I", 2**32 - 1)})
    with pytest.raises(ModelFormatError, match=r"'tokenizer\.ggml\.eos_token_id' = 4294967295 is not a token id"):
        Model(path)


def test_token_types_stored_as_strings_are_refused(good_model, tmp_path):
    # ggml's gguf_get_arr_data aborts on an array of strings.
    path = rewrite_gguf(
        good_model, tmp_path / "types.gguf", set_kv={"tokenizer.ggml.token_type": (["1"] * 50400, ARRAY)}
    )
    with pytest.raises(ModelFormatError, match=r"'tokenizer\.ggml\.token_type' should be an array of integers"):
        Model(path)


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    # In a child process: a regression would block this one forever.
    code = f"from gptj_ggml import Model\ntry:\n    Model({str(fifo)!r})\nexcept FileNotFoundError as e:\n    print(e)"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert "model.gguf: a named pipe, not a regular file" in result.stdout, result


def test_a_character_device_is_refused():
    with pytest.raises(FileNotFoundError, match="/dev/zero: a character device, not a regular file"):
        Model("/dev/zero")


def test_a_path_with_a_nul_byte_is_a_value_error(good_model):
    # A C string ends at the NUL: the part before it would have been opened.
    with pytest.raises(ValueError, match="NUL"):
        Model(str(good_model) + "\0.txt")


def test_the_largest_headers_allowed_still_parse_quickly(tmp_path):
    # The limits keep ggml's quadratic duplicate checks cheap: 4096 keys of 256 bytes that share
    # all but their last 6, the worst case for its comparisons.
    path = tmp_path / "wide.gguf"
    _write_gguf(path, {"a" * 250 + f"{i:06d}": i for i in range(4096)})
    started = time.perf_counter()
    with pytest.raises(ModelFormatError, match="general.architecture"):
        Model(path)
    assert time.perf_counter() - started < 2.0


def test_a_megabyte_token_in_a_file_without_merges_loads_in_proportion(good_model, tmp_path):
    # Without merges the vocabulary derives them from the ids, trying every split of a token
    # that BPE does not split in two: the square of its length (hours for this one, before).
    tokens = gguf.GGUFReader(good_model).fields["tokenizer.ggml.tokens"].contents()
    tokens[50255] = "a" * 1_000_000
    path = rewrite_gguf(
        good_model,
        tmp_path / "long-token.gguf",
        drop_kv=("tokenizer.ggml.merges",),
        set_kv={"tokenizer.ggml.tokens": (tokens, ARRAY)},
    )
    started = time.perf_counter()
    model = Model(path)
    assert time.perf_counter() - started < 5.0
    assert model.tokenizer.token_bytes(50255) == b"a" * 1_000_000


def test_a_path_that_is_not_utf8_is_named_in_the_error_not_a_decode_error(tmp_path):
    from gptj_ggml._native import core

    with pytest.raises(FileNotFoundError, match=r"missing-\\xff\.gguf: cannot open"):
        core.Model(os.fsencode(tmp_path) + b"/missing-\xff.gguf", True, 0, True)
