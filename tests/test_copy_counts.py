"""benchmarks/train_tiny.py's copy measurements against brute-force definitions.

The lead's speculation figures rest on these counts: which positions repeat an earlier n-gram,
and which token a prompt-lookup draft proposes. Each is checked against a direct search over
every earlier position, on random sequences over a small alphabet (so n-grams repeat often).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from train_tiny import CopyCounts, LookupCounts, count_copies, count_lookups


def _repeats_earlier(ids: list[int], k: int, n: int) -> bool:
    """ids[k] completes an n-gram that occurred whole before position k."""
    if k < n - 1:
        return False
    gram = ids[k - n + 1 : k + 1]
    return any(ids[j : j + n] == gram for j in range(k - n + 1))


def _draft(ids: list[int], k: int, n: int) -> int | None:
    """The token after the last earlier occurrence of ids[k - n : k] whose next token is before k."""
    suffix = ids[k - n : k]
    for end in range(k - 2, n - 2, -1):
        if ids[end - n + 1 : end + 1] == suffix:
            return ids[end + 1]
    return None


def _sequences() -> list[tuple[list[int], list[int]]]:
    rng = random.Random(0)
    cases = []
    for _ in range(40):
        length = rng.randint(1, 60)
        ids = [rng.randrange(4) for _ in range(length)]
        predicted = [rng.randrange(4) for _ in range(length)]
        cases.append((ids, predicted))
    return cases


@pytest.mark.parametrize("n", [2, 3, 4])
def test_copy_counts_split_positions_by_an_earlier_occurrence_of_the_ngram(n: int) -> None:
    for ids, predicted in _sequences():
        counts = CopyCounts()
        count_copies(ids, predicted, n, counts)
        expected = CopyCounts()
        for k in range(1, len(ids)):
            hit = predicted[k - 1] == ids[k]
            if _repeats_earlier(ids, k, n):
                expected.repeated += 1
                expected.repeated_hits += hit
            else:
                expected.novel += 1
                expected.novel_hits += hit
        assert counts == expected, ids


@pytest.mark.parametrize("n", [1, 2, 3])
def test_lookup_drafts_are_the_token_after_the_last_earlier_match(n: int) -> None:
    for ids, predicted in _sequences():
        counts = LookupCounts()
        count_lookups(ids, predicted, n, counts)
        expected = LookupCounts()
        for k in range(n, len(ids)):
            expected.positions += 1
            draft = _draft(ids, k, n)
            if draft is not None:
                expected.drafts += 1
                expected.draft_is_next += draft == ids[k]
                expected.model_takes_draft += predicted[k - 1] == draft
        assert counts == expected, ids
