"""How the next token is chosen: :class:`SamplingParams` and the distribution they give.

The sampler itself runs in C++ (``csrc/gptj/sampling.cpp``) as a chain of small steps over
the logits: repetition penalties, ``logit_bias``, top-k, typical, top-p, min-p, temperature,
then a draw from the resulting distribution. Temperature 0 skips the filters and picks the
most likely token after the penalties and bias (greedy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class SamplingParams:
    """Settings of the sampler chain; each step's neutral value turns it off.

    Attributes:
        temperature: divides the logits before the draw; 0 is greedy (the most likely token).
        top_k: keep the ``top_k`` most likely tokens; 0 keeps all.
        top_p: keep the most likely tokens whose probabilities add up to at least ``top_p``
            (nucleus sampling); 1 keeps all.
        min_p: keep tokens at least ``min_p`` times as likely as the most likely one; 0 keeps all.
        typical_p: locally typical sampling: keep the tokens whose surprise is closest to the
            distribution's entropy, up to ``typical_p`` of the probability; 1 keeps all.
        repeat_penalty: the logits of tokens among the last ``repeat_last_n`` are divided by it
            (multiplied when negative), as llama.cpp and transformers do; 1 is off.
        repeat_last_n: how many of the most recent tokens (prompt included) the penalties look
            at; 0 is off, -1 the whole context.
        presence_penalty: subtracted once from the logit of each token among the recent ones.
        frequency_penalty: subtracted from a token's logit for each time it occurs among them.
        logit_bias: token id -> value added to its logit (``-math.inf`` bans the token).

    The filters (top-k, typical, top-p, min-p) work at temperature 1, in that order; the
    temperature then reshapes what is left, as llama.cpp's classic sampler does.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)

    def sampler(self, n_vocab: int, seed: int) -> _core.Sampler:  # noqa: F821 - the extension loads lazily
        """The C++ sampler with these settings (raises ``ValueError`` for a value out of range)."""
        from ._native import core

        return core.Sampler(
            n_vocab,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            typical_p=self.typical_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias={int(k): float(v) for k, v in self.logit_bias.items()},
            seed=seed & (2**64 - 1),
        )


#: Plain greedy decoding: the most likely token, no penalties (what transformers' generate does by default).
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)


def probabilities(
    logits: npt.ArrayLike, params: SamplingParams = SamplingParams(), history: Sequence[int] = ()
) -> npt.NDArray[np.float64]:
    """The distribution the sampler draws the next token from, one probability per token id.

    Args:
        logits: the model's logits for the next token, shape ``(n_vocab,)``.
        params: the sampler settings.
        history: the tokens before these logits (the penalties look at the last ``repeat_last_n``).

    Tokens the filters remove have probability 0; at temperature 0 the result is one-hot.
    """
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    if logits.ndim != 1:
        raise ValueError(f"logits must be one-dimensional, got shape {logits.shape}")
    return params.sampler(logits.shape[0], seed=0).distribution(logits, list(history))
