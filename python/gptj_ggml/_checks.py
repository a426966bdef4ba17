"""Checks of the public API's arguments, each raising ``TypeError`` or ``ValueError`` that names
the argument, before the engine sees the value.

Why here: the engine's own conversions report a float or an out-of-range integer only as
pybind11's "Unable to cast" (a RuntimeError) or "incompatible function arguments", and a
silent ``int(1.5)`` would quietly make a count of 1.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int``: ``TypeError`` unless it is an integer (``bool`` and ``float``
    are refused, numpy integers accepted), ``ValueError`` outside ``[minimum, maximum]``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {number}")
    return number


#: The engine's sizes and counts are 32-bit.
INT32_MAX = 2**31 - 1


def positive(name: str, value: Any) -> int:
    """An integer in [1, INT32_MAX] (a size or a count that cannot be zero; the engine checks
    what the machine can hold)."""
    number = integer(name, value, maximum=INT32_MAX)
    if number <= 0:
        raise ValueError(f"{name} must be positive, got {number}")
    return number


def token_ids(name: str, ids: Iterable[Any], n_vocab: int) -> list[int]:
    """``ids`` as a list of token ids of a vocabulary of ``n_vocab`` tokens; the error names the
    argument and the position (``token id 50400 is out of range [0, 50400) (prompt[3])``)."""
    if isinstance(ids, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be a sequence of token ids, not {type(ids).__name__}")
    try:
        items = list(ids)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of token ids, not {type(ids).__name__}") from None
    out = []
    for i, item in enumerate(items):
        number = integer(f"{name}[{i}]", item)
        if not 0 <= number < n_vocab:
            raise ValueError(f"token id {number} is out of range [0, {n_vocab}) ({name}[{i}])")
        out.append(number)
    return out
