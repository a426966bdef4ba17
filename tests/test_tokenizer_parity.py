"""Token ids are exactly those of Hugging Face `tokenizers` on GPT-J's tokenizer.json, on any text.

The corpus in tests/data/tokenizer_corpus covers English prose with contractions in both cases,
code with tabs and CRLF, runs of spaces and newlines (trailing too), digits of several scripts,
CJK / Cyrillic / Arabic / Hebrew / Devanagari / Thai and more, combining accents, emoji with skin
tones and ZWJ sequences, flags, NBSP and the other Unicode spaces, zero-width characters,
fullwidth forms, math symbols, letters new in Unicode 15/16, and added tokens.
"""

from __future__ import annotations

import json
import unicodedata

import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers.pre_tokenizers import ByteLevel

from gptj_ggml._native import core

from tokenizer_fixtures import CORPUS, TOKENIZER_FOLDER, corpus_text

# Characters and strings at the edges of GPT-2's regex: every kind of space, apostrophes and the
# letters of contractions, marks, digits of other scripts, emoji parts and added tokens.
EDGE_PIECES = [
    " ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u1680", "\u180e",
    "\u2002", "\u200b", "\u200c", "\u200d", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff",
    "'", "'s", "'S", "'t", "'re", "'ve", "'m", "'ll", "'LL", "'d", "s", "t", "re", "l", "a", "Z", "é",
    "e\u0301", "\u0301", "\u20dd", "1", "23", "٣", "५", "１", "½", "Ⅻ", "²", "中", "ア", "ก", "ا", "ש",
    "😀", "🏽", "👨\u200d👩", "🇺🇸", "\ufe0f", "!", "?!", ".", "-", "_", "$", "∑", "＇", "\x00", "\ud7ff",
    "\U000105c0", "\U00031350", "<|endoftext|>", "<|extratoken_1|>", "<|extratoken_143|>", "<|", "|>",
]
edge_text = st.lists(st.sampled_from(EDGE_PIECES), max_size=40).map("".join)



@pytest.fixture(scope="module")
def reference_without_added_tokens() -> tokenizers.Tokenizer:
    """tokenizers with no added tokens: `<|endoftext|>` in the text is just text."""
    config = json.loads((TOKENIZER_FOLDER / "tokenizer.json").read_text(encoding="utf-8"))
    config["added_tokens"] = []
    return tokenizers.Tokenizer.from_str(json.dumps(config))


@pytest.mark.parametrize("path", CORPUS, ids=[path.stem for path in CORPUS])
def test_corpus_ids_match_tokenizers(tokenizer, reference, path):
    text = corpus_text(path)
    assert tokenizer.encode(text, special=True) == reference.encode(text).ids


@pytest.mark.parametrize("path", CORPUS, ids=[path.stem for path in CORPUS])
def test_corpus_lines_match_tokenizers(tokenizer, reference, path):
    for line in corpus_text(path).splitlines(keepends=True):
        assert tokenizer.encode(line, special=True) == reference.encode(line).ids, repr(line)


@pytest.mark.parametrize("path", CORPUS, ids=[path.stem for path in CORPUS])
def test_corpus_ids_without_special_match_tokenizers_without_added_tokens(
    tokenizer, reference_without_added_tokens, path
):
    text = corpus_text(path)
    assert tokenizer.encode(text) == reference_without_added_tokens.encode(text).ids


def test_special_true_maps_added_tokens_to_their_ids(tokenizer):
    assert tokenizer.encode("a<|endoftext|>b<|extratoken_1|> <|extratoken_143|>", special=True) == [
        64, 50256, 65, 50257, 220, 50399,
    ]


def test_special_false_keeps_added_token_strings_as_text(tokenizer, reference_without_added_tokens):
    text = "<|endoftext|><|extratoken_1|>"
    ids = tokenizer.encode(text)
    assert not set(ids) & {50256, 50257}
    assert ids == reference_without_added_tokens.encode(text).ids


def test_special_false_is_the_default(tokenizer):
    assert tokenizer.encode("<|endoftext|>") == tokenizer.encode("<|endoftext|>", special=False)


def test_empty_text_has_no_tokens(tokenizer):
    assert tokenizer.encode("") == []
    assert tokenizer.encode("", special=True) == []


def test_long_unicode_whitespace_runs_match_tokenizers(tokenizer, reference):
    for space in ["\xa0", "\u3000", "\u2028", "\x85", " \xa0", "\t "]:
        for n in (1, 2, 3, 17):
            for text in (space * n, "x" + space * n, space * n + "x", "x" + space * n + "y"):
                assert tokenizer.encode(text, special=True) == reference.encode(text).ids, repr(text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_random_text_matches_tokenizers(tokenizer, reference, reference_without_added_tokens, text):
    assert tokenizer.encode(text, special=True) == reference.encode(text).ids
    assert tokenizer.encode(text) == reference_without_added_tokens.encode(text).ids


@settings(max_examples=400, deadline=None)
@given(text=edge_text)
def test_regex_edge_cases_match_tokenizers(tokenizer, reference, reference_without_added_tokens, text):
    assert tokenizer.encode(text, special=True) == reference.encode(text).ids
    assert tokenizer.encode(text) == reference_without_added_tokens.encode(text).ids


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(codec="utf-8", categories=["L", "M", "N", "Z", "P", "S", "C"]), max_size=30))
def test_random_text_of_every_category_matches_tokenizers(tokenizer, reference, text):
    assert tokenizer.encode(text, special=True) == reference.encode(text).ids


def regex_class(code_point: int) -> str:
    character = chr(code_point)
    return "space" if character.isspace() else unicodedata.category(character)[0]


def code_points_to_check() -> list[int]:
    """Where the pre-tokenizer's classes can go wrong: the dense scripts below U+3400, both sides of
    every change of class by Python's unicodedata (an independent, older Unicode), and every 31st
    code point for the blocks that only newer Unicode versions fill."""
    selected = set(range(0x3400))
    selected.update(range(0, 0x110000, 31))
    previous = None
    for code_point in range(0x110000):
        current = regex_class(code_point)
        if current != previous:
            selected.update((code_point - 1, code_point))
        previous = current
    return sorted(c for c in selected if c >= 0 and not 0xD800 <= c < 0xE000)


def test_pre_tokenizer_classes_match_tokenizers_across_unicode():
    # Each code point doubled, after a space and before a letter: where the text splits shows
    # whether tokenizers' regex takes it for a letter, a number, a space or something else.
    pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=True)
    code_points = code_points_to_check()
    for start in range(0, len(code_points), 2000):
        text = "".join(" " + chr(c) + chr(c) + "a" for c in code_points[start : start + 2000])
        expected = [text[begin:end] for _, (begin, end) in pre_tokenizer.pre_tokenize_str(text)]
        assert [piece.decode("utf-8") for piece in core.Vocab.split_pieces(text)] == expected
