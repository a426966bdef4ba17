"""Encoding stays linear in practice on inputs that make naive BPE quadratic, and is thread-safe."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gptj_ggml.tokenizer import Tokenizer

from tokenizer_fixtures import CORPUS, TOKENIZER_FOLDER

# A naive BPE (rescan every pair after each merge) needs minutes on these; ours needs milliseconds.
# The bound is loose so a busy CI machine does not fail it.
TIME_LIMIT_SECONDS = 1.0


def timed_encode(tokenizer: Tokenizer, text: str) -> tuple[list[int], float]:
    start = time.perf_counter()
    ids = tokenizer.encode(text)
    return ids, time.perf_counter() - start


@pytest.mark.parametrize(
    "text",
    [
        "x" * 100_000,
        "abcdefghij" * 10_000,
        "😀" * 10_000,
        "1" * 100_000,
        "." * 100_000,
        " " * 100_000,
        "\u00a0" * 50_000,
        "".join(chr(0x4E00 + i % 2000) for i in range(30_000)),
    ],
    ids=["letters", "cycle", "emoji", "digits", "dots", "spaces", "nbsp", "cjk"],
)
def test_a_100_kb_piece_encodes_in_linear_time_and_exactly(tokenizer, reference, text):
    ids, seconds = timed_encode(tokenizer, text)
    assert seconds < TIME_LIMIT_SECONDS
    assert ids == reference.encode(text).ids


def test_concurrent_encodes_give_the_same_ids(tokenizer):
    corpus = "".join(path.read_bytes().decode("utf-8") for path in CORPUS)
    # Long enough (over 4 kB each) that encode releases the GIL and the threads really overlap.
    texts = [corpus[shift:] + corpus[:shift] for shift in range(0, 1600, 100)]
    expected = [tokenizer.encode(text) for text in texts]
    fresh = Tokenizer.from_folder(TOKENIZER_FOLDER)  # an empty cache, filled by all threads at once
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(fresh.encode, texts)) == expected
