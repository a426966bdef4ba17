"""The vocabulary read from a tokenizer folder matches GPT-J's files, and lands in the GGUF unchanged."""

from __future__ import annotations

import json

import pytest

from gptj_ggml.convert import TokenizerData, TokenType, read_tokenizer
from gptj_ggml.errors import ConversionError

from checkpoints import TOKENIZER_DIR, copy_tokenizer

N_VOCAB = 50400


@pytest.fixture(scope="module")
def vocab_json() -> dict[str, int]:
    return json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def merges_txt() -> list[str]:
    lines = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines[1:] if line]


@pytest.fixture(scope="module")
def from_vocab_and_merges(tmp_path_factory) -> TokenizerData:
    folder = copy_tokenizer(
        tmp_path_factory.mktemp("tok"),
        ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"),
    )
    return read_tokenizer(folder, N_VOCAB)


def test_tokens_are_vocab_json_by_id(from_vocab_and_merges, vocab_json):
    for token, token_id in vocab_json.items():
        assert from_vocab_and_merges.tokens[token_id] == token


def test_merges_are_merges_txt_in_order(from_vocab_and_merges, merges_txt):
    assert from_vocab_and_merges.merges == merges_txt


def test_token_types(from_vocab_and_merges):
    types = from_vocab_and_merges.token_types
    assert types[0] == TokenType.NORMAL
    assert types[50256] == TokenType.CONTROL  # <|endoftext|>
    assert from_vocab_and_merges.tokens[50257] == "<|extratoken_1|>"
    assert types[50257:] == [TokenType.USER_DEFINED] * 143


def test_bos_and_eos_are_endoftext(from_vocab_and_merges):
    assert (from_vocab_and_merges.bos_id, from_vocab_and_merges.eos_id) == (50256, 50256)


def test_tokenizer_json_alone_gives_the_same_data(tmp_path, from_vocab_and_merges):
    folder = copy_tokenizer(tmp_path, ("tokenizer.json",))
    assert read_tokenizer(folder, N_VOCAB) == from_vocab_and_merges


def test_tokenizer_json_merges_as_pairs_give_the_same_data(tmp_path, from_vocab_and_merges):
    data = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["merges"] = [merge.split(" ") if isinstance(merge, str) else merge for merge in data["model"]["merges"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    assert read_tokenizer(tmp_path, N_VOCAB) == from_vocab_and_merges


def test_smaller_tokenizer_is_padded_with_unused_tokens(tmp_path):
    folder = copy_tokenizer(tmp_path, ("vocab.json", "merges.txt"))
    data = read_tokenizer(folder, N_VOCAB)
    assert len(data.tokens) == len(data.token_types) == N_VOCAB
    assert data.tokens[50257] == "[PAD50257]"
    assert data.token_types[50257:] == [TokenType.UNUSED] * 143
    assert data.eos_id == 50256


def test_tokenizer_larger_than_the_model_is_refused(tmp_path):
    folder = copy_tokenizer(tmp_path, ("tokenizer.json",))
    with pytest.raises(ConversionError, match="50399"):
        read_tokenizer(folder, 50300)


def test_missing_tokenizer_is_refused(tmp_path):
    with pytest.raises(ConversionError, match="no tokenizer"):
        read_tokenizer(tmp_path, N_VOCAB)


def test_gguf_holds_the_tokenizer_arrays(tiny_gptj_gguf, from_vocab_and_merges):
    reader = tiny_gptj_gguf("f16")
    assert reader.fields["tokenizer.ggml.tokens"].contents() == from_vocab_and_merges.tokens
    assert reader.fields["tokenizer.ggml.token_type"].contents() == from_vocab_and_merges.token_types
    assert reader.fields["tokenizer.ggml.merges"].contents() == from_vocab_and_merges.merges
