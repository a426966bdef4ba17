"""Decoding gives back the exact text, in one call or token by token (streaming)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptj_ggml.tokenizer import Tokenizer

from tokenizer_fixtures import CORPUS


def stream(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    decoder = tokenizer.stream_decoder()
    return [decoder.feed(token_id) for token_id in ids] + [decoder.flush()]


@pytest.mark.parametrize("path", CORPUS, ids=[path.stem for path in CORPUS])
def test_decode_of_encode_gives_back_the_corpus(tokenizer, path):
    text = path.read_bytes().decode("utf-8")
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer.encode(text, special=True)) == text


@pytest.mark.parametrize("path", CORPUS, ids=[path.stem for path in CORPUS])
def test_decode_matches_tokenizers(tokenizer, reference, path):
    ids = reference.encode(path.read_bytes().decode("utf-8")).ids
    assert tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=False)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80))
def test_decode_of_encode_gives_back_any_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer.encode(text, special=True)) == text


def test_decode_keeps_special_tokens_as_text(tokenizer):
    assert tokenizer.decode([50256, 50257]) == "<|endoftext|><|extratoken_1|>"


def test_token_bytes_are_raw_bytes(tokenizer):
    assert tokenizer.token_bytes(220) == b" "
    assert tokenizer.token_bytes(198) == b"\n"
    assert tokenizer.token_bytes(0) == b"!"
    assert tokenizer.token_bytes(50256) == b"<|endoftext|>"


def test_decode_of_a_split_character_replaces_it(tokenizer):
    ids = tokenizer.encode("😀")
    assert len(ids) > 1, "the test needs an emoji that takes more than one token"
    assert tokenizer.decode_bytes(ids[:1]) == "😀".encode()[: len(tokenizer.decode_bytes(ids[:1]))]
    assert tokenizer.decode(ids[:1]) == "\ufffd"


def test_ids_outside_the_vocabulary_raise_value_error(tokenizer):
    for bad in (-1, tokenizer.n_tokens, 1 << 30):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            tokenizer.decode([0, bad])
        with pytest.raises(ValueError, match="outside the vocabulary"):
            tokenizer.token_bytes(bad)


def test_lone_surrogates_cannot_be_encoded(tokenizer):
    # A str with a lone surrogate has no UTF-8 form, so no ids could decode back to it.
    with pytest.raises(UnicodeEncodeError):
        tokenizer.encode("a\ud800b")


def test_stream_holds_back_a_character_split_across_tokens(tokenizer):
    ids = tokenizer.encode("日本😀👍🏽")
    pieces = stream(tokenizer, ids)
    assert len(ids) > 4, "the test needs characters that take several tokens"
    assert "".join(pieces) == "日本😀👍🏽"
    assert "\ufffd" not in "".join(pieces)
    assert any(piece == "" for piece in pieces[:-1]), "some token should complete no character"


def test_stream_yields_a_character_with_the_token_of_its_last_byte(tokenizer):
    ids = tokenizer.encode(" 😀")
    texts = stream(tokenizer, ids)
    assert texts[: len(ids) - 1] == [" "] + [""] * (len(ids) - 2)
    assert texts[len(ids) - 1] == "😀"
    assert texts[-1] == ""


def test_stream_flush_replaces_an_unfinished_character(tokenizer):
    ids = tokenizer.encode("a😀")
    texts = stream(tokenizer, ids[:-1])  # drop the token with the emoji's last byte
    assert "".join(texts[:-1]) == "a"
    assert texts[-1] == "\ufffd"
    assert "".join(texts) == tokenizer.decode(ids[:-1])


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_stream_concatenates_to_decode(tokenizer, text):
    ids = tokenizer.encode(text)
    assert "".join(stream(tokenizer, ids)) == tokenizer.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 50399), max_size=30))
def test_stream_of_any_ids_concatenates_to_decode(tokenizer, ids):
    # Also when the bytes are not valid UTF-8: both replace the same bytes.
    assert "".join(stream(tokenizer, ids)) == tokenizer.decode(ids)
