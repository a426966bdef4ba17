"""Shared data and fixtures of the tokenizer tests: GPT-J's tokenizer, ours and the reference.

Import what a test module needs (``from tokenizer_fixtures import tokenizer, reference``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tokenizers

from gptj_ggml.tokenizer import Tokenizer

DATA = Path(__file__).parent / "data"
TOKENIZER_FOLDER = DATA / "gptj-tokenizer"
CORPUS = sorted((DATA / "tokenizer_corpus").glob("*.txt"))


def corpus_text(path: Path) -> str:
    # Bytes, not read_text(): universal newlines would turn the corpus's CRLF and CR into LF.
    return path.read_bytes().decode("utf-8")


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    """Ours, built from GPT-J's tokenizer folder."""
    return Tokenizer.from_folder(TOKENIZER_FOLDER)


@pytest.fixture(scope="session")
def reference() -> tokenizers.Tokenizer:
    """tokenizers as GPT-J ships it: added tokens are found in the text."""
    return tokenizers.Tokenizer.from_file(str(TOKENIZER_FOLDER / "tokenizer.json"))
