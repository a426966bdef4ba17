"""Prompt lookup decoding for one completion: its options, and the state between steps.

A :class:`Speculation` holds the completion's tokens (prompt and generated) in an
:class:`~.ngram_index.NgramIndex`, proposes a draft before each step (:meth:`Speculation.draft`:
maybe none, see :mod:`.draft_policy`), and learns from what each step produced
(:meth:`Speculation.record_step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import _checks
from .draft_policy import Acceptance, StepCost, best_draft_length
from .ngram_index import NgramIndex

#: The most drafted tokens a step verifies: the engine's kernels for a step's few tokens read
#: each weight once for up to 16 tokens (a longer step is a prompt's matrix product).
MAX_DRAFT = 15


@dataclass(frozen=True)
class PromptLookup:
    """Prompt lookup (n-gram) speculative decoding: ``generate(..., lookup=PromptLookup(...))``,
    or ``lookup=8`` for the defaults with at most 8 drafted tokens.

    Before each step the last ``max_ngram`` (down to ``min_ngram``) tokens of the prompt and
    generated text are looked up in what came before; the tokens that followed their latest
    occurrence are the draft, and one evaluation checks them all. Tokens are accepted exactly as
    the sampler would have drawn them (greedy output is the same token for token; sampled output
    has the same distribution, and a seed gives the same tokens), so the only effect is on speed:
    input-grounded generation (quoting, editing or continuing given text) goes faster, and
    drafting stops on its own where drafts fail.

    Attributes:
        max_draft: the most tokens drafted per step (1 to 15).
        min_ngram, max_ngram: the n-gram sizes matched (1 <= min_ngram <= max_ngram <= 8).
        adaptive: choose each draft's length from the measured acceptance and step costs (and
            draft nothing where it would not pay); False always drafts as much as matched.
    """

    max_draft: int = 8
    min_ngram: int = 1
    max_ngram: int = 3
    adaptive: bool = True

    def __post_init__(self) -> None:
        _checks.integer("lookup.max_draft", self.max_draft, minimum=1, maximum=MAX_DRAFT)
        _checks.integer("lookup.min_ngram", self.min_ngram, minimum=1, maximum=8)
        _checks.integer("lookup.max_ngram", self.max_ngram, minimum=self.min_ngram, maximum=8)
        if not isinstance(self.adaptive, bool):
            raise TypeError(f"lookup.adaptive must be a bool, got {type(self.adaptive).__name__}")


def lookup_options(value: object) -> PromptLookup | None:
    """The ``lookup`` argument as options: None or 0 is off, an integer is ``max_draft``."""
    if value is None or isinstance(value, PromptLookup):
        return value
    max_draft = _checks.integer("lookup", value, minimum=0, maximum=MAX_DRAFT)
    return PromptLookup(max_draft=max_draft) if max_draft > 0 else None


class Speculation:
    """One completion's drafts: the index of its tokens, the policy's estimates, the counts."""

    def __init__(self, options: PromptLookup, prompt: Sequence[int]) -> None:
        self.options = options
        self.index = NgramIndex(range(options.min_ngram, options.max_ngram + 1), prompt)
        self.acceptance = Acceptance()
        self.cost = StepCost()
        #: Drafted tokens verified, and how many of them were accepted.
        self.drafted = self.accepted = 0
        self._verifying: tuple[list[int], int] | None = None  # the draft being verified, its n-gram size
        # A draft not verified, its n-gram size and how many of its tokens the steps since matched.
        self._shadow: tuple[list[int], int, int] | None = None

    def draft(self, limit: int, base_tokens: int = 1) -> list[int]:
        """The tokens to verify after the step's token: at most ``limit`` (what fits in the context
        and in ``max_tokens``) in a step that evaluates ``base_tokens`` tokens without them."""
        proposal, ngram = self.index.lookup(min(limit, self.options.max_draft))
        if not proposal:
            return []
        if not self.options.adaptive:
            length = len(proposal)
        else:
            length = best_draft_length(self.acceptance.rate(ngram), len(proposal), self.cost, base_tokens)
        if length == 0:
            # Not verified, but still measured: the tokens the next steps produce tell whether it
            # would have been accepted. One at a time (a proposal each step would count most tokens twice).
            if self._shadow is None:
                self._shadow = (proposal, ngram, 0)
            return []
        draft = proposal[:length]
        self._verifying = (draft, ngram)
        return draft

    def record_step(self, produced: Sequence[int], n_evaluated: int | None, step_ms: float) -> None:
        """What one step produced (its sampled tokens, in order) and its cost: the tokens the call
        evaluated (None: not a step to learn costs from, e.g. shared with a prompt) and its time."""
        if n_evaluated is not None:
            self.cost.observe(n_evaluated, step_ms)
        if self._verifying is not None:
            draft, ngram = self._verifying
            self._verifying = None
            accepted = len(produced) - 1
            self.drafted += len(draft)
            self.accepted += accepted
            self.acceptance.record(ngram, accepted, rejected=accepted < len(draft))
        if self._shadow is not None:
            self._compare_shadow(produced)
        self.index.extend(produced)

    def _compare_shadow(self, produced: Sequence[int]) -> None:
        draft, ngram, matched = self._shadow  # type: ignore[misc]
        for token in produced:
            if token != draft[matched]:
                self._shadow = None
                self.acceptance.record(ngram, matched, rejected=True)
                return
            matched += 1
            if matched == len(draft):
                self._shadow = None
                self.acceptance.record(ngram, matched, rejected=False)
                return
        self._shadow = (draft, ngram, matched)  # all agreed so far: the next steps go on comparing
