"""Stop strings over streamed text: find them, and hold back what could be the start of one."""

from __future__ import annotations

from collections.abc import Sequence


class StopStrings:
    """The stop strings of one generation.

    Text is released only once it is certain that no stop string starts in it: a stop string
    can span several tokens, so a tail of the text that is a prefix of one waits for the
    next token.
    """

    def __init__(self, stop: str | Sequence[str] | None) -> None:
        stops = [stop] if isinstance(stop, str) else list(stop or ())
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"stop strings must be non-empty strings, got {stops!r}")
        self.strings: tuple[str, ...] = tuple(stops)

    def __bool__(self) -> bool:
        return bool(self.strings)

    def find(self, text: str) -> int:
        """Where the first stop string in ``text`` starts, or -1."""
        found = [i for i in (text.find(s) for s in self.strings) if i >= 0]
        return min(found, default=-1)

    def safe_length(self, text: str) -> int:
        """How much of ``text`` (which holds no whole stop string) can be released: all but
        its longest tail that is the start of a stop string."""
        held = 0
        for s in self.strings:
            for n in range(min(len(s) - 1, len(text)), held, -1):
                if text.endswith(s[:n]):
                    held = n
                    break
        return len(text) - held
