"""A vocabulary without merges (legacy GGML files) tokenizes exactly like GPT-2's merges.txt.

GPT-2's merged tokens are numbered in merge order, so the Vocab derives the merges from the ids.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptj_ggml.convert.tokenizer_data import read_tokenizer
from gptj_ggml.tokenizer import GPTJ_N_VOCAB, Tokenizer

from tokenizer_fixtures import CORPUS, TOKENIZER_FOLDER


@pytest.fixture(scope="module")
def vocabulary_data():
    return read_tokenizer(TOKENIZER_FOLDER, GPTJ_N_VOCAB)


@pytest.fixture(scope="module")
def with_merges(vocabulary_data) -> Tokenizer:
    data = vocabulary_data
    return Tokenizer.from_data(data.tokens, data.token_types, data.merges, data.bos_id, data.eos_id)


@pytest.fixture(scope="module")
def without_merges(vocabulary_data) -> Tokenizer:
    data = vocabulary_data
    return Tokenizer.from_data(data.tokens, data.token_types, [], data.bos_id, data.eos_id)


@pytest.mark.parametrize("path", CORPUS, ids=[path.stem for path in CORPUS])
def test_merge_less_vocabulary_matches_tokenizers_on_the_corpus(without_merges, reference, path):
    text = path.read_bytes().decode("utf-8")
    assert without_merges.encode(text, special=True) == reference.encode(text).ids


def test_merge_less_vocabulary_encodes_every_token_text_like_the_real_merges(
    with_merges, without_merges, vocabulary_data
):
    # The text of every merged token exercises the merge that made it and every merge before it.
    for token_id in range(256, 50256):
        token_text = with_merges.token_bytes(token_id)
        assert without_merges.encode(token_text) == with_merges.encode(token_text), token_id


def test_merge_less_vocabulary_encodes_token_pairs_like_the_real_merges(with_merges, without_merges):
    # Neighbouring tokens glued together, which makes BPE choose between competing merges.
    texts = [with_merges.token_bytes(i) + with_merges.token_bytes(i + 1) for i in range(256, 50255, 7)]
    assert [without_merges.encode(text) for text in texts] == [with_merges.encode(text) for text in texts]


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_merge_less_vocabulary_matches_tokenizers_on_random_text(without_merges, reference, text):
    assert without_merges.encode(text, special=True) == reference.encode(text).ids
