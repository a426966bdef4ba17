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


#: The KV cache types a session can store keys and values in (the quantized ones need flash attention).
CACHE_TYPES = ("f16", "q8_0", "q4_0")


def cache_layout(cache_type: Any, flash_attn: Any) -> tuple[str, bool]:
    """``(cache_type, flash_attn)`` checked, with ``flash_attn=None`` resolved: on for a
    quantized cache (which needs it), off for f16."""
    if not isinstance(cache_type, str) or cache_type not in CACHE_TYPES:
        raise ValueError(f"cache_type must be one of {', '.join(CACHE_TYPES)}, got {cache_type!r}")
    if flash_attn is None:
        return cache_type, cache_type != "f16"
    if not isinstance(flash_attn, bool):
        raise TypeError(f"flash_attn must be a bool or None, got {type(flash_attn).__name__}")
    if cache_type != "f16" and not flash_attn:
        raise ValueError(f"cache_type {cache_type} needs flash_attn (plain attention stores the values transposed)")
    return cache_type, flash_attn
