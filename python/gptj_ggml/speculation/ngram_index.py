"""Where the sequence's last n tokens occurred before, and what followed them there.

For each n-gram size the index maps an n-gram to the position right after its latest
occurrence that has a continuation (an n-gram is entered when the token after it arrives, so
the sequence's own tail never finds itself). A lookup tries the longest size first: a longer
match is a better predictor of what comes next. A continuation that reaches the end of the
sequence goes on as the repetition it is.
"""

from __future__ import annotations

from collections.abc import Iterable


class NgramIndex:
    """The latest continuation of every n-gram of a token sequence, for n in ``sizes``."""

    def __init__(self, sizes: Iterable[int], tokens: Iterable[int] = ()) -> None:
        self.sizes = sorted(set(sizes), reverse=True)
        assert self.sizes and self.sizes[-1] >= 1
        self.tokens: list[int] = []
        self._after: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self.sizes}
        self.extend(tokens)

    def append(self, token: int) -> None:
        tokens = self.tokens
        end = len(tokens)  # where `token` goes: the continuation of the n-grams ending here
        for n in self.sizes:
            if end >= n:
                self._after[n][tuple(tokens[end - n : end])] = end
        tokens.append(token)

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self.append(token)

    def lookup(self, limit: int) -> tuple[list[int], int]:
        """Up to ``limit`` tokens that followed the longest n-gram matching the sequence's tail
        at its latest earlier occurrence, and that n (``([], 0)`` when nothing matches)."""
        tokens = self.tokens
        length = len(tokens)
        if limit <= 0:
            return [], 0
        for n in self.sizes:
            if length < n:
                continue
            start = self._after[n].get(tuple(tokens[length - n :]))
            if start is not None:
                return _continuation(tokens, start, limit), n
        return [], 0


def _continuation(tokens: list[int], start: int, limit: int) -> list[int]:
    """``limit`` tokens copied from ``start`` on, the copy running on into itself past the end:
    a match close to the tail is a repetition of period ``len(tokens) - start`` (a run of spaces,
    a repeated line), and what follows it is more of the same, not just the tokens left before
    the end."""
    period = len(tokens) - start
    draft = tokens[start : start + limit]
    while len(draft) < limit:
        draft.append(draft[len(draft) - period])
    return draft
