"""How the next token is chosen: :class:`SamplingParams` and the distribution they give.

The sampler itself runs in C++ (``csrc/gptj/sampling.cpp``) as a chain of small steps over
the logits: repetition penalties, ``logit_bias``, top-k, typical, top-p, min-p, temperature,
then a draw from the resulting distribution. Temperature 0 skips the filters and picks the
most likely token after the penalties and bias (greedy).

The numeric settings are defined once, in ``csrc/gptj/sampling_settings.h``; this module
reads them from the engine (:data:`SETTINGS`) and makes :class:`SamplingParams` from them, so
the class, ``Session.generate``'s keyword arguments, the CLI's flags and the server's request
fields never list them by hand.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _checks
from ._native import core

if TYPE_CHECKING:
    from . import _core


@dataclasses.dataclass(frozen=True)
class SamplingSetting:
    """One numeric setting of the sampler, as the engine defines it.

    Attributes:
        name: the keyword (``top_p``), also the CLI flag (``--top-p``) and the request field.
        type: ``int`` or ``float``.
        default: its value unless given.
        low, high: the ends of its range (``math.inf`` when unbounded).
        low_inclusive, high_inclusive: whether each end is allowed (an infinite end never is).
        help: one line saying what it does and which value turns it off.
    """

    name: str
    type: type
    default: int | float
    low: float
    high: float
    low_inclusive: bool
    high_inclusive: bool
    help: str

    @property
    def range_text(self) -> str:
        """The allowed range as in the error messages: ``(0, 1]``, ``>= 0``, ``any finite number``."""
        if math.isinf(self.low) and math.isinf(self.high):
            return "any finite number"
        if math.isinf(self.high):
            return f"{'>=' if self.low_inclusive else '>'} {self.low:g}"
        return f"{'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}{']' if self.high_inclusive else ')'}"


#: Every numeric setting of the sampler, in the order of the record (csrc/gptj/sampling_settings.h).
SETTINGS: tuple[SamplingSetting, ...] = tuple(
    SamplingSetting(**{**row, "type": int if row["type"] == "int" else float}) for row in core.sampling_settings()
)
_BY_NAME = {setting.name: setting for setting in SETTINGS}
#: Everything :class:`SamplingParams` holds: the numeric settings and ``logit_bias``.
FIELDS: tuple[str, ...] = (*_BY_NAME, "logit_bias")


class _SamplingParamsMethods:
    """The behaviour of :class:`SamplingParams`; its fields come from :data:`SETTINGS`."""

    def __post_init__(self) -> None:
        core.check_sampling_settings(self.settings())  # ValueError/TypeError naming the setting
        if self.logit_bias is None:  # type: ignore[attr-defined] - as generate(logit_bias=None) always allowed
            object.__setattr__(self, "logit_bias", {})
        if not isinstance(self.logit_bias, Mapping):
            raise TypeError(f"logit_bias must be a mapping of token id to value, got {type(self.logit_bias).__name__}")
        for token_id, value in self.logit_bias.items():
            _checks.integer("a logit_bias key", token_id, minimum=0, maximum=_checks.INT32_MAX)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"logit_bias[{token_id}] must be a number, got {type(value).__name__}")
            if math.isnan(value) or value == math.inf:
                raise ValueError(f"logit_bias[{token_id}] must be a number or -inf, got {value}")

    def settings(self) -> dict[str, int | float]:
        """The numeric settings as a dict (``logit_bias`` is not among them)."""
        return {name: getattr(self, name) for name in _BY_NAME}

    def replace(self, **changes: Any) -> SamplingParams:
        """A copy with ``changes`` applied; a name that is no setting raises ``TypeError``."""
        check_names(changes, "SamplingParams")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def sampler(self, n_vocab: int, seed: int) -> _core.Sampler:
        """The C++ sampler with these settings (raises ``ValueError`` for a logit_bias id >= n_vocab)."""
        n_vocab = _checks.positive("n_vocab", n_vocab)
        seed = _checks.integer("seed", seed)
        bias = {int(k): float(v) for k, v in self.logit_bias.items()}  # type: ignore[attr-defined]
        return core.Sampler(n_vocab, self.settings(), logit_bias=bias, seed=seed & (2**64 - 1))


def check_names(names: Mapping[str, Any], caller: str) -> None:
    """Raise ``TypeError`` for a name that is neither a setting nor ``logit_bias``, suggesting the nearest."""
    for name in names:
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; the sampling settings are {', '.join(FIELDS)}"
            raise TypeError(f"{caller} got an unexpected keyword argument {name!r}{hint}")


def _docstring() -> str:
    lines = [
        "Settings of the sampler chain; each step's neutral value turns it off.",
        "",
        "Attributes:",
    ]
    lines += [f"    {s.name}: {s.help}. Default {s.default}; allowed: {s.range_text}." for s in SETTINGS]
    lines += [
        "    logit_bias: token id -> value added to its logit (``-math.inf`` bans the token).",
        "",
        "The filters (top-k, typical, top-p, min-p) work at temperature 1, in that order; the",
        "temperature then reshapes what is left, as llama.cpp's classic sampler does. Values out of",
        "range raise ``ValueError`` when the object is made. ``replace(**changes)`` makes a copy.",
    ]
    return "\n".join(lines)


SamplingParams = dataclasses.make_dataclass(
    "SamplingParams",
    [(s.name, s.type, dataclasses.field(default=s.default)) for s in SETTINGS]
    + [("logit_bias", Mapping[int, float], dataclasses.field(default_factory=dict))],
    bases=(_SamplingParamsMethods,),
    frozen=True,
)
SamplingParams.__module__ = __name__  # for repr, pickling and docs (make_dataclass's module= is 3.12+)
SamplingParams.__doc__ = _docstring()

#: Plain greedy decoding: the most likely token, no penalties (transformers' ``generate(do_sample=False)``).
GREEDY = SamplingParams(temperature=0.0)


def probabilities(
    logits: npt.ArrayLike, params: SamplingParams | None = None, history: Sequence[int] = ()
) -> npt.NDArray[np.float64]:
    """The distribution the sampler draws the next token from, one probability per token id.

    Args:
        logits: the model's logits for the next token, shape ``(n_vocab,)``.
        params: the sampler settings (default: ``SamplingParams()``).
        history: the tokens before these logits (the penalties look at the last ``repeat_last_n``).

    Tokens the filters remove have probability 0; at temperature 0 the result is one-hot.

    Raises:
        ValueError: logits that are empty, not one-dimensional, or hold NaN or +inf; a history
            id out of range.
        TypeError: params that are no SamplingParams; a history that is no sequence of ints.
    """
    if params is not None and not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
    array = np.asarray(logits)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"logits must be an array of numbers, got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # beyond float32: +inf is refused below, -inf bans the token
        array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"logits must be one-dimensional, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("logits must hold at least one value (one per token of the vocabulary)")
    params = SamplingParams() if params is None else params
    ids = _checks.token_ids("history", history, array.shape[0])
    return params.sampler(array.shape[0], seed=0).distribution(array, ids)
