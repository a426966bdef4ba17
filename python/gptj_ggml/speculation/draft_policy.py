"""How many drafted tokens to verify: the count that gives the most tokens per millisecond.

Verifying m drafts costs one evaluation of m more tokens (and m more samples); it pays only
as far as the drafts are accepted. Two estimates, both from this completion's own steps:

- :class:`StepCost`: a step's milliseconds as a line in the tokens it evaluates, fitted to the
  recent steps. Nearly flat where generation is bound by reading the weights (a 6B model), much
  steeper for a tiny model, whose step time is mostly per-token work.
- :class:`Acceptance`: the chance that a drafted token is accepted, given the ones before it
  were, per n-gram size of the match. Counted on every lookup, verified or not: a draft that
  is not verified is compared with the tokens the steps then produce (the same event, for
  free), so the estimate keeps up when drafting has stopped.

With acceptance p the expected tokens of a step verifying m drafts are 1 + p + ... + p^m;
:func:`best_draft_length` picks the m in [0, limit] that maximizes them over the step's cost
relative to a plain step, and 0 (a plain step) unless some m beats it by ``margin``: on text
whose drafts fail, generation goes at the plain speed.
"""

from __future__ import annotations


class StepCost:
    """Milliseconds of a step as ``a + b * n`` for n tokens evaluated, least squares over the
    recent steps (each older step's weight decays by ``decay``).

    Until steps of different sizes have been seen, the slope comes from a prior, ``b =
    prior_slope * a`` (per extra token, a fraction of a one-token step), held with the weight
    of ``prior_weight`` observations so that a few noisy timings do not swing it.
    """

    def __init__(self, prior_slope: float = 0.05, prior_weight: float = 2.0, decay: float = 0.95) -> None:
        self.prior_slope = prior_slope
        self.prior_weight = prior_weight
        self.decay = decay
        self._w = self._n = self._t = self._nn = self._nt = 0.0

    def observe(self, n_tokens: int, ms: float) -> None:
        d = self.decay
        self._w = self._w * d + 1.0
        self._n = self._n * d + n_tokens
        self._t = self._t * d + ms
        self._nn = self._nn * d + n_tokens * n_tokens
        self._nt = self._nt * d + n_tokens * ms

    def line(self) -> tuple[float, float]:
        """(a, b): the fitted intercept and slope (ms, ms per token)."""
        if self._w == 0.0:
            return 1.0, self.prior_slope
        mean_n, mean_t = self._n / self._w, self._t / self._w
        var = self._nn / self._w - mean_n * mean_n
        cov = self._nt / self._w - mean_n * mean_t
        # The prior's slope for a step of mean_n tokens costing mean_t.
        prior_b = self.prior_slope * mean_t / (1.0 + self.prior_slope * max(mean_n - 1.0, 0.0))
        k = self.prior_weight / self._w
        slope = max((cov + k * prior_b) / (var + k), 0.0)
        return max(mean_t - slope * mean_n, 1e-9), slope

    def ratio(self, base_tokens: int, extra_tokens: int) -> float:
        """The cost of a step of ``base_tokens + extra_tokens`` relative to one of ``base_tokens``."""
        a, b = self.line()
        return (a + b * (base_tokens + extra_tokens)) / (a + b * base_tokens)


class Acceptance:
    """Per n-gram size, the chance a drafted token is accepted after its predecessors were:
    accepted / tried, with one of each as a prior, older counts decaying by ``decay`` per draft."""

    def __init__(self, decay: float = 0.97) -> None:
        self.decay = decay
        self._counts: dict[int, list[float]] = {}

    def record(self, ngram: int, accepted: int, rejected: bool) -> None:
        """One draft's outcome: ``accepted`` tokens in a row, then a rejected one (or the draft ran out)."""
        counts = self._counts.setdefault(ngram, [0.0, 0.0])
        counts[0] = counts[0] * self.decay + accepted
        counts[1] = counts[1] * self.decay + accepted + int(rejected)

    def rate(self, ngram: int) -> float:
        accepted, tried = self._counts.get(ngram, (0.0, 0.0))
        return (accepted + 1.0) / (tried + 2.0)


def expected_tokens(p: float, m: int) -> float:
    """Tokens a step gives when it verifies m drafts, each accepted with p after the ones before."""
    return float(m + 1) if p >= 1.0 else (1.0 - p ** (m + 1)) / (1.0 - p)


def best_draft_length(p: float, limit: int, cost: StepCost, base_tokens: int = 1, margin: float = 0.03) -> int:
    """The draft length in [0, limit] with the most expected tokens per unit of step time."""
    best_m, best_value = 0, 1.0 + margin
    for m in range(1, limit + 1):
        value = expected_tokens(p, m) / cost.ratio(base_tokens, m)
        if value > best_value:
            best_m, best_value = m, value
    return best_m
