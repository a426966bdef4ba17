"""One generation: the iterator ``Session.generate`` returns, and the records it reports.

:class:`Generation` drives one :class:`~gptj_ggml.decoding.Decoding` (the per-step logic shared
with the batched drivers) on one session: each step calls the engine once (evaluate the last
token, sample the next, in C++ without the GIL); Python only turns ids into text, holds back text
that could start a stop string, and keeps the timings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from types import TracebackType

    from .decoding import Decoding

#: Why a generation ended: a stop string, end-of-text, ``max_tokens``, a full context
#: (with ``on_context_full="stop"``), or the caller closed it early.
FinishReason = Literal["stop", "eos", "length", "context", "cancelled"]

#: What to do when the context is full: raise :class:`ContextFullError`, end the generation
#: (``finish_reason="context"``), or drop the oldest half of the tokens after ``n_keep`` and go on.
ContextPolicy = Literal["error", "stop", "shift"]


@dataclass(frozen=True)
class Token:
    """One generated token: its id, the text it adds and, when asked, its log-probability.

    ``text`` never splits a UTF-8 character (bytes of a character spread over several tokens
    come with the token that completes it) and never holds any part of a stop string, so
    joining every ``text`` gives the completion. ``logprob`` is the model's own
    log-probability of the token (log-softmax of the raw logits, before any sampler step);
    ``top_logprobs`` the most likely tokens at that step under the same measure, as
    ``(id, logprob)`` pairs, most likely first (with ``top_logprobs=N``).
    """

    id: int
    text: str
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] | None = None


@dataclass(frozen=True)
class Timings:
    """Where the time of one generation went, measured around the engine's calls.

    Attributes:
        load_ms: loading the model (once per Model, repeated here for reports).
        reused_tokens: prompt tokens already in the session's cache, not evaluated again.
        prompt_tokens: prompt tokens evaluated.
        prompt_ms: evaluating them and sampling the first token (the time to first token).
        generated_tokens: tokens sampled (an end-of-text that ended the generation included).
        generation_ms: every later step, each evaluating the previous token and sampling the
            next one (``generated_tokens - 1`` steps), plus any context shift.
        sample_ms: the part of prompt_ms and generation_ms spent sampling.
        total_ms: wall time from the first step to the end, Python included.
        drafted_tokens: tokens guessed by prompt lookup and verified (``lookup=``; 0 without).
        accepted_tokens: those of them the model agreed with (each one a token without a step of its own).
    """

    load_ms: float
    reused_tokens: int
    prompt_tokens: int
    prompt_ms: float
    generated_tokens: int
    generation_ms: float
    sample_ms: float
    total_ms: float
    drafted_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def ms_per_token(self) -> float:
        """Milliseconds per generated token after the first (nan if there was only one)."""
        steps = self.generated_tokens - 1
        return self.generation_ms / steps if steps > 0 else math.nan

    def __str__(self) -> str:
        def rate(n: int, ms: float) -> str:
            return f"{n / ms * 1e3:.1f} tokens/s" if ms > 0 else "- tokens/s"

        steps = max(self.generated_tokens - 1, 0)
        lines = [
            f"load:       {self.load_ms:9.1f} ms",
            (
                f"prompt:     {self.prompt_ms:9.1f} ms for {self.prompt_tokens} tokens "
                f"({rate(self.prompt_tokens, self.prompt_ms)}, {self.reused_tokens} reused)"
            ),
            (
                f"generation: {self.generation_ms:9.1f} ms for {steps} tokens "
                f"({self.ms_per_token:.2f} ms/token, {rate(steps, self.generation_ms)})"
            ),
            f"sampling:   {self.sample_ms:9.1f} ms for {self.generated_tokens} tokens",
        ]
        if self.drafted_tokens:
            share = self.accepted_tokens / self.drafted_tokens
            lines.append(
                f"lookup:     {self.accepted_tokens} of {self.drafted_tokens} drafted tokens accepted ({share:.0%})"
            )
        lines.append(f"total:      {self.total_ms:9.1f} ms")
        return "\n".join(lines)


@dataclass(frozen=True)
class Completion:
    """The whole result of a generation.

    Attributes:
        text: the generated text (without the prompt, a stop string or end-of-text).
        tokens: the ids of the yielded tokens (a token whose text was cut by a stop string
            is included; tokens wholly inside it are not).
        finish_reason: why it ended (see :data:`FinishReason`).
        timings: where the time went.
        logprobs: each token's log-probability, when asked for.
        seed: the random seed used (pass it back to reproduce a sampled generation).
    """

    text: str
    tokens: list[int]
    finish_reason: FinishReason
    timings: Timings
    logprobs: list[float] | None
    seed: int


class DecodingView:
    """What a running completion shows of its Decoding (Generation and BatchCompletion share it)."""

    _decoding: Decoding

    @property
    def finish_reason(self) -> FinishReason | None:
        """Why it ended; None while it can still go on (running, or paused by a ``break``)."""
        return self._decoding.finish_reason

    @property
    def tokens(self) -> list[int]:
        """Ids of the tokens handed out so far."""
        return self._decoding.tokens

    @property
    def text(self) -> str:
        """The text handed out so far."""
        return "".join(self._decoding.texts)

    @property
    def seed(self) -> int:
        """The random seed of its sampler (pass it back to reproduce a sampled completion)."""
        return self._decoding.seed

    @property
    def timings(self) -> Timings:
        """The timings so far."""
        return self._decoding.timings()


class Generation(DecodingView, Iterator[Token]):
    """The tokens of one generation, yielded as they are produced.

    Lazy: each ``next()`` runs the model only as far as the next token. Breaking out of the
    loop, :meth:`close` or dropping the object stops at once; the session then holds exactly
    the tokens evaluated so far, and a later call reuses them. After the end,
    :attr:`finish_reason`, :attr:`timings` and :meth:`result` describe it; :attr:`text` and
    :attr:`tokens` grow as it runs.

    A ``break`` only pauses it (``next()`` would go on), so :attr:`finish_reason` stays None
    until it is closed: explicitly, by the next ``generate`` on the same session, or at the end
    of a ``with`` block, which makes it "cancelled" at once::

        with model.generate(prompt) as generation:
            for token in generation:
                if done(token):
                    break
        generation.finish_reason  # "cancelled" (or why it ended, if it ended first)
    """

    def __init__(self, decoding: Decoding) -> None:
        # The state lives in the Decoding, which never refers back to this object: when the
        # caller drops the Generation, the loop is closed at once (no cycle to wait for).
        self._decoding = decoding
        self._steps = _drive(decoding)

    def __next__(self) -> Token:
        return next(self._steps)

    def __enter__(self) -> Generation:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop generating (``finish_reason`` becomes "cancelled" if it had not ended)."""
        self._steps.close()
        self._decoding.end()  # for a generation closed before its first step

    def result(self) -> Completion:
        """Run to the end (if not there yet) and return the whole :class:`Completion`."""
        for _ in self:
            pass
        return completion_of(self._decoding)

    def __repr__(self) -> str:
        text = self.text
        shown = text if len(text) <= 60 else text[:57] + "..."
        return f"<Generation {self.finish_reason or 'running'}, {len(self.tokens)} tokens: {shown!r}>"


def completion_of(decoding: Decoding) -> Completion:
    """The :class:`Completion` of a decoding that has ended."""
    assert decoding.finish_reason is not None
    return Completion(
        text="".join(decoding.texts),
        tokens=list(decoding.tokens),
        finish_reason=decoding.finish_reason,
        timings=decoding.timings(),
        logprobs=list(decoding.logprobs) if decoding.options.logprobs else None,
        seed=decoding.seed,
    )


def _drive(decoding: Decoding) -> Iterator[Token]:
    """The single-session loop: one engine call per step (``evaluate_and_verify`` when it has a draft)."""
    session, sampler = decoding.session, decoding.sampler
    want_logprob, n_top_logprobs = decoding.options.logprobs, decoding.options.top_logprobs
    speculating = decoding.speculation is not None
    try:
        while (tokens := decoding.next_tokens()) is not None:
            if speculating:  # an empty draft is a plain step
                draft = decoding.draft()
                steps = session.evaluate_and_verify(tokens, draft, sampler, want_logprob, n_top_logprobs)
                decoding.accept_steps(steps, len(tokens) + len(draft))
            else:
                decoding.accept(session.evaluate_and_sample(tokens, sampler, want_logprob, n_top_logprobs))
            yield from decoding.hand_out()
        yield from decoding.hand_out()
        if decoding.error is not None:
            raise decoding.error
    finally:
        decoding.end()
