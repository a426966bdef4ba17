"""Malformed config.json, tokenizer files, safetensors headers and legacy files give one ConversionError
naming the file and the field: never AttributeError, KeyError, TypeError, struct.error, OverflowError,
RecursionError or UnicodeDecodeError. The CLI prints it as one ``error:`` line and exits 1.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from gptj_ggml.cli import main
from gptj_ggml.convert import convert_checkpoint
from gptj_ggml.errors import ConversionError

from fuzz.fixtures import write_checkpoint, write_legacy


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("malformed") / "checkpoint", "safetensors")


@pytest.fixture
def checkpoint(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "checkpoint"))


def _edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    replaced = edit(document)
    path.write_text(json.dumps(document if replaced is None else replaced), encoding="utf-8")


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda document: document.__setitem__(key, value)


def _refused(src: Path, tmp_path: Path, match: str) -> ConversionError:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(ConversionError, match=match) as raised:
        convert_checkpoint(src, out / "model.gguf")
    assert list(out.iterdir()) == []
    return raised.value


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda config: [], r"config\.json: holds \[\], expected a JSON object"),
        (lambda config: "gptj", r"config\.json: holds 'gptj', expected a JSON object"),
        (_set("n_embd", "32"), r"config\.json: n_embd is '32', expected a positive integer"),
        (_set("n_layer", 10**400), r"config\.json: n_layer is an integer of 1329 bits, expected an integer from 1"),
        (_set("n_head", 2.0), r"config\.json: n_head is 2\.0, expected a positive integer"),
        (_set("rotary_dim", True), r"config\.json: rotary_dim is True, expected a positive integer"),
        (_set("vocab_size", None), r"config\.json: vocab_size is None, expected a positive integer"),
        (_set("n_positions", [64]), r"config\.json: n_positions is \[64\], expected a positive integer"),
        (_set("layer_norm_epsilon", 10**400), r"config\.json: layer_norm_epsilon is an integer of 1329 bits"),
        (_set("layer_norm_epsilon", "1e-5"), r"config\.json: layer_norm_epsilon is '1e-5', expected a number"),
        (
            _set("layer_norm_epsilon", 1e300),
            r"config\.json: layer_norm_epsilon is 1e\+300, expected a number in \(0, 1\)",
        ),
        (_set("tie_word_embeddings", "no"), r"config\.json: tie_word_embeddings is 'no', expected true or false"),
        (_set("model_type", ["gptj"]), r"config\.json: model_type is \[?'gptj'\]?|model_type is a list"),
        (_set("_name_or_path", 5), r"config\.json: _name_or_path is 5, expected text"),
        (_set("_name_or_path", "\ud800"), r"config\.json: _name_or_path is '\\ud800', expected text"),
    ],
)
def test_a_malformed_config_json_names_the_file_and_field(checkpoint, tmp_path, edit, match):
    _edit_json(checkpoint / "config.json", edit)
    _refused(checkpoint, tmp_path, match)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"model_type": "gptj", \xff}', r"config\.json: not UTF-8 text \(byte 23 is invalid\)"),
        (b'{"model_type": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", r"config\.json: JSON nested too deeply"),
        (b'{"n_embd": 1' + b"0" * 5000 + b"}", r"config\.json: not valid JSON \(Exceeds the limit"),
        (b'{"n_embd": 32, "n_embd": 64}', r"config\.json: the key 'n_embd' appears twice in one object"),
        (b'{"model_type": "gptj"', r"config\.json: not valid JSON"),
        (b"\xef\xbb\xbf{}", r"config\.json: not valid JSON \(Unexpected UTF-8 BOM"),
    ],
)
def test_config_json_that_does_not_parse_names_the_file(checkpoint, tmp_path, content, match):
    (checkpoint / "config.json").write_bytes(content)
    _refused(checkpoint, tmp_path, match)


def test_a_config_json_that_is_a_folder_is_refused(checkpoint, tmp_path):
    (checkpoint / "config.json").unlink()
    (checkpoint / "config.json").mkdir()
    _refused(checkpoint, tmp_path, r"config\.json: not a regular file")


def _without_tokenizer_json(folder: Path) -> Path:
    (folder / "tokenizer.json").unlink()
    return folder


@pytest.mark.parametrize(
    ("file_name", "edit", "match"),
    [
        ("tokenizer.json", _set("model", []), r"tokenizer\.json: not a BPE tokenizer"),
        ("tokenizer.json", lambda t: t["model"]["vocab"].__setitem__("a", "3"), r"token a has id '3', not an integer"),
        ("tokenizer.json", lambda t: t["model"]["merges"].__setitem__(0, 5), r"tokenizer\.json: merge 0 is 5"),
        ("tokenizer.json", lambda t: t["model"]["merges"].__setitem__(0, ["a b", "c"]), "a token with a space"),
        ("tokenizer.json", lambda t: t["model"].__setitem__("merges", {"h": "e"}), "model.merges is a JSON object"),
        (
            "tokenizer.json",
            lambda t: t["added_tokens"].__setitem__(0, {"id": 1}),
            r"added_tokens\[0\] is not an object",
        ),
        ("tokenizer.json", _set("added_tokens", 7), r"tokenizer\.json: added_tokens is 7, expected a list"),
        ("tokenizer.json", lambda t: t["added_tokens"].append(t["added_tokens"][0]), "listed twice"),
        ("tokenizer.json", lambda t: t["model"]["vocab"].__setitem__("a", 10**30), r"token id an integer of 100 bits"),
        ("tokenizer.json", lambda t: t["model"]["vocab"].__setitem__("a", 0), "token id 0 is given to both"),
        ("special_tokens_map.json", lambda m: [m], r"special_tokens_map\.json: holds a list of 1 items"),
        ("special_tokens_map.json", _set("additional_special_tokens", 5), "additional_special_tokens is 5"),
        ("tokenizer_config.json", _set("added_tokens_decoder", {"1": {}}), r"added_tokens_decoder\[1\] has no string"),
        (
            "tokenizer_config.json",
            _set("added_tokens_decoder", []),
            "added_tokens_decoder is \\[\\], expected an object",
        ),
        ("tokenizer_config.json", _set("chat_template", 5), "chat_template must be a string"),
        ("tokenizer_config.json", _set("chat_template", [{"name": ["x"]}]), None),  # no default template: none kept
    ],
)
def test_a_malformed_tokenizer_json_file_names_the_file_and_field(checkpoint, tmp_path, file_name, edit, match):
    _edit_json(checkpoint / file_name, edit)
    if match is None:
        convert_checkpoint(checkpoint, tmp_path / "model.gguf")
        return
    _refused(checkpoint, tmp_path, match)


@pytest.mark.parametrize(
    ("file_name", "content", "match"),
    [
        ("vocab.json", b"[]", r"vocab\.json: the file is \[\], expected an object of token: id"),
        ("vocab.json", b'{"a": null}', r"vocab\.json: token a has id None, not an integer"),
        ("merges.txt", b"#version: 0.2\nh e\n\xff\xfe x\n", r"merges\.txt: not UTF-8 text"),
        ("merges.txt", b"#version: 0.2\nh  e\n", r"merge 0 \('h  e'\) is not two tokens separated by a space"),
        ("added_tokens.json", b'{"<|extratoken_1|>": [321]}', r"added_tokens\.json: token <\|extratoken_1\|> has id"),
        ("added_tokens.json", b'"x"', r"added_tokens\.json: the file is 'x'"),
    ],
)
def test_a_malformed_slow_tokenizer_file_names_the_file(checkpoint, tmp_path, file_name, content, match):
    _without_tokenizer_json(checkpoint)
    (checkpoint / file_name).write_bytes(content)
    _refused(checkpoint, tmp_path, match)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"[1, 2]", "safetensors header is not a JSON object"),
        (b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "JSON nested too deeply"),
        (b'{"a": 1\xff}', r"safetensors header is not UTF-8 \(byte 15\)"),
        (b'{"a": 5}', r"safetensors entry of tensor a is 5, not an object"),
        (b'{"__metadata__": {"format": 1}}', "__metadata__ must map names to strings"),
        (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 1' + b"0" * 5000 + b"]}}", "Exceeds the limit"),
    ],
)
def test_a_malformed_safetensors_header_names_the_file(checkpoint, tmp_path, header, match):
    path = checkpoint / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    _refused(checkpoint, tmp_path, rf"model\.safetensors: .*{match}")


def test_a_safetensors_header_length_past_the_file_names_the_file(checkpoint, tmp_path):
    path = checkpoint / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2**64 - 1) + path.read_bytes()[8:])
    _refused(checkpoint, tmp_path, r"model\.safetensors: safetensors header length 18446744073709551615 is invalid")


@pytest.fixture
def legacy(base, tmp_path) -> Path:
    return write_legacy(tmp_path / "ggml-model-f16.bin", base)


@pytest.mark.parametrize(
    ("position", "value", "match"),
    [
        (4 + 4 * 3, 0, "n_head is 0, expected an integer from 1 to 16777216"),
        (4 + 4 * 5, 7, "n_rot 7 must be even and at most the head size 16"),
        (4 + 4 * 1, 2**24 + 1, "n_ctx is 16777217, expected an integer from 1 to 16777216"),
        (4 + 4 * 2, -32, "n_embd is -32, expected an integer from 1 to 16777216"),
        (4 + 4 * 6, 5, "unknown ftype 5"),
    ],
)
def test_a_bad_legacy_header_field_is_named(legacy, tmp_path, position, value, match):
    data = bytearray(legacy.read_bytes())
    struct.pack_into("<i", data, position, value)
    legacy.write_bytes(bytes(data))
    _refused(legacy, tmp_path, rf"ggml-model-f16\.bin: {match}")


@pytest.mark.parametrize("length", [3, 20, 40])
def test_a_legacy_file_cut_inside_its_header_names_what_was_cut(legacy, tmp_path, length):
    legacy.write_bytes(legacy.read_bytes()[:length])
    _refused(
        legacy, tmp_path, r"ggml-model-f16\.bin: (the file ends inside|not a checkpoint folder|corrupt vocabulary)"
    )


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "config.json").write_text("[]"),
        lambda folder: (folder / "config.json").write_text('{"model_type": "gptj", "n_embd": "x"}'),
        lambda folder: (folder / "tokenizer.json").write_bytes(b"\xff"),
        lambda folder: (folder / "model.safetensors").write_bytes(struct.pack("<Q", 6) + b"[1, 2]"),
    ],
)
def test_the_cli_prints_one_error_line_and_exits_1(checkpoint, tmp_path, capsys, damage):
    damage(checkpoint)

    code = main(["convert", str(checkpoint), "-o", str(tmp_path / "model.gguf")])

    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert str(checkpoint) in err
