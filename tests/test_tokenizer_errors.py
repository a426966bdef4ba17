"""Inconsistent vocabulary data is refused with a ValueError that says what is wrong."""

from __future__ import annotations

import pytest

from gptj_ggml.tokenizer import Tokenizer

# A toy vocabulary in GPT-2's byte alphabet: "Ġ" is the space byte.
TOKENS = ["a", "b", "Ġ", "ab", "<|endoftext|>"]
TYPES = [1, 1, 1, 1, 3]


def test_a_toy_vocabulary_encodes_with_its_merges():
    tokenizer = Tokenizer.from_data(TOKENS, TYPES, ["a b"], 4, 4)
    assert tokenizer.encode("ab ba<|endoftext|>", special=True) == [3, 2, 1, 0, 4]


def test_a_merge_of_an_unknown_token_is_refused():
    with pytest.raises(ValueError, match="needs the token 'c'"):
        Tokenizer.from_data(TOKENS, TYPES, ["a c"], 4, 4)


def test_a_merge_that_is_not_two_tokens_is_refused():
    with pytest.raises(ValueError, match="not two tokens"):
        Tokenizer.from_data(TOKENS, TYPES, ["ab"], 4, 4)


def test_token_types_of_another_length_are_refused():
    with pytest.raises(ValueError, match="5 tokens but 4 token types"):
        Tokenizer.from_data(TOKENS, TYPES[:4], ["a b"], 4, 4)


def test_an_unknown_token_type_is_refused():
    with pytest.raises(ValueError, match="token type 9"):
        Tokenizer.from_data(TOKENS, [1, 1, 1, 1, 9], ["a b"], 4, 4)


def test_a_bos_id_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="bos token id 5"):
        Tokenizer.from_data(TOKENS, TYPES, ["a b"], 5, 4)


def test_a_byte_without_a_token_cannot_be_encoded():
    tokenizer = Tokenizer.from_data(TOKENS, TYPES, ["a b"], 4, 4)
    with pytest.raises(ValueError, match="no token for the byte 99"):
        tokenizer.encode("c")
