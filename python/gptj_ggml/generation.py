"""One generation: the streaming loop behind ``Session.generate`` and what it reports.

:class:`Generation` is the iterator ``generate`` returns. Each step calls the engine once
(evaluate the last token, sample the next, in C++ without the GIL); Python only turns ids
into text, holds back text that could start a stop string, and keeps the timings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .errors import ContextFullError
from .stop import StopStrings
from .tokenizer import StreamDecoder, Tokenizer

if TYPE_CHECKING:
    from types import TracebackType

    from . import _core

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
    """

    load_ms: float
    reused_tokens: int
    prompt_tokens: int
    prompt_ms: float
    generated_tokens: int
    generation_ms: float
    sample_ms: float
    total_ms: float

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
            f"total:      {self.total_ms:9.1f} ms",
        ]
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


#: A sampled token's log-probability and the most likely alternatives, (id, logprob) pairs.
_Score = tuple[float, list[tuple[int, float]]]


@dataclass(frozen=True)
class _Options:
    max_tokens: int
    stop: StopStrings
    logprobs: bool
    top_logprobs: int
    on_context_full: ContextPolicy
    n_keep: int
    seed: int
    is_cancelled: Callable[[], bool] | None = None


class Generation(Iterator[Token]):
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

    def __init__(self, stream: _Stream) -> None:
        # The loop's state lives in _Stream, which never refers back to this object: when the
        # caller drops the Generation, the loop is closed at once (no cycle to wait for).
        self._stream = stream
        self._steps = stream.run()

    @property
    def finish_reason(self) -> FinishReason | None:
        """Why it ended; None while it can still go on (running, or paused by a ``break``)."""
        return self._stream.finish_reason

    @property
    def tokens(self) -> list[int]:
        """Ids of the tokens yielded so far."""
        return self._stream.tokens

    @property
    def text(self) -> str:
        """The text yielded so far."""
        return "".join(self._stream.texts)

    @property
    def seed(self) -> int:
        """The random seed of this generation."""
        return self._stream.options.seed

    @property
    def timings(self) -> Timings:
        """The timings so far."""
        return self._stream.timings()

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
        self._stream.end()  # for a generation closed before its first step

    def result(self) -> Completion:
        """Run to the end (if not there yet) and return the whole :class:`Completion`."""
        for _ in self:
            pass
        stream = self._stream
        assert stream.finish_reason is not None
        return Completion(
            text=self.text,
            tokens=list(stream.tokens),
            finish_reason=stream.finish_reason,
            timings=stream.timings(),
            logprobs=list(stream.logprobs) if stream.options.logprobs else None,
            seed=self.seed,
        )

    def __repr__(self) -> str:
        text = self.text
        shown = text if len(text) <= 60 else text[:57] + "..."
        return f"<Generation {self.finish_reason or 'running'}, {len(self.tokens)} tokens: {shown!r}>"


class _Stream:
    """The generation loop and its state (see Generation)."""

    def __init__(
        self,
        core_session: _core.Session,
        sampler: _core.Sampler,
        tokenizer: Tokenizer,
        prompt: list[int],
        options: _Options,
        load_ms: float,
        on_end: Callable[[_Stream], None],
    ) -> None:
        self.core = core_session
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.options = options
        self.on_end = on_end
        self.finish_reason: FinishReason | None = None
        self.tokens: list[int] = []
        self.texts: list[str] = []
        self.logprobs: list[float] = []
        self.load_ms = load_ms
        self.reused = self.prompt_tokens = self.generated = 0
        self.prompt_ms = self.generation_ms = self.sample_ms = self.total_ms = 0.0

    def timings(self) -> Timings:
        return Timings(
            load_ms=self.load_ms,
            reused_tokens=self.reused,
            prompt_tokens=self.prompt_tokens,
            prompt_ms=self.prompt_ms,
            generated_tokens=self.generated,
            generation_ms=self.generation_ms,
            sample_ms=self.sample_ms,
            total_ms=self.total_ms,
        )

    def end(self) -> None:
        if self.finish_reason is None:
            self.finish_reason = "cancelled"
        self.on_end(self)

    def emit(self, token_id: int, text: str, score: _Score) -> Token:
        self.tokens.append(token_id)
        self.texts.append(text)
        if self.options.logprobs:
            logprob, top = score
            self.logprobs.append(logprob)
            return Token(token_id, text, logprob, tuple(top) if self.options.top_logprobs else None)
        return Token(token_id, text)

    def run(self) -> Iterator[Token]:
        session, options = self.core, self.options
        started = time.perf_counter()
        # Tokens sampled but not yet yielded: (id, text, (logprob, top logprobs)). They wait while their text
        # could be the start of a stop string, or while a UTF-8 character is unfinished.
        held: list[tuple[int, str, _Score]] = []
        decoder = self.tokenizer.stream_decoder()
        eos_id = self.tokenizer.eos_id
        try:
            pending = self.reuse_prefix()
            while True:
                if self.generated == options.max_tokens:
                    self.finish_reason = "length"
                    break
                if session.n_past + len(pending) > session.n_ctx:
                    if options.on_context_full == "stop":
                        self.finish_reason = "context"
                        break
                    if options.on_context_full == "error":
                        yield from self.release_last(held, decoder)
                        if self.finish_reason == "stop":
                            return
                        raise ContextFullError(
                            f"the context is full ({session.n_ctx} tokens); pass on_context_full='shift' "
                            "to drop old tokens, 'stop' to end there, or use a larger n_ctx"
                        )
                    self.shift()
                if options.is_cancelled is not None and options.is_cancelled():
                    return  # what is held is dropped: whoever cancelled no longer reads (end(): "cancelled")
                token_id, logprob, eval_ms, sample_ms, top = session.evaluate_and_sample(
                    pending, self.sampler, options.logprobs, options.top_logprobs
                )
                if self.generated == 0:
                    self.prompt_ms += eval_ms + sample_ms
                else:
                    self.generation_ms += eval_ms + sample_ms
                self.sample_ms += sample_ms
                self.generated += 1
                if token_id == eos_id:
                    self.finish_reason = "eos"
                    break
                held.append((token_id, decoder.feed(token_id), (logprob, top)))
                yield from self.release_held(held, decoder, final=False)
                if self.finish_reason == "stop":
                    return
                pending = [token_id]
            yield from self.release_last(held, decoder)
        finally:
            self.total_ms = (time.perf_counter() - started) * 1e3
            self.end()

    def reuse_prefix(self) -> list[int]:
        """Keep the longest common prefix of the cache and the prompt; return what is left to evaluate."""
        n_common = 0
        for cached, wanted in zip(self.core.history, self.prompt):
            if cached != wanted:
                break
            n_common += 1
        # At least one token is evaluated, for fresh logits.
        n_common = min(n_common, len(self.prompt) - 1)
        self.core.truncate(n_common)
        self.reused = n_common
        self.prompt_tokens = len(self.prompt) - n_common
        return self.prompt[n_common:]

    def shift(self) -> None:
        n_keep = self.options.n_keep
        n_discard = (self.core.n_past - n_keep) // 2
        started = time.perf_counter()
        self.core.discard(n_keep, n_discard)
        self.generation_ms += (time.perf_counter() - started) * 1e3

    def release_last(self, held: list[tuple[int, str, _Score]], decoder: StreamDecoder) -> Iterator[Token]:
        """At the end: an unfinished character becomes U+FFFD on the last token, then everything
        held is released (up to a stop string, if the tail completes one)."""
        tail = decoder.flush()
        if tail and held:
            token_id, text, score = held[-1]
            held[-1] = (token_id, text + tail, score)
        yield from self.release_held(held, decoder, final=True)

    def release_held(self, held: list[tuple[int, str, _Score]], decoder: StreamDecoder, final: bool) -> Iterator[Token]:
        """Yield the held tokens whose text is decided, and end at a stop string."""
        text = "".join(t for _, t, _ in held)
        stop = self.options.stop
        cut = stop.find(text) if stop else -1
        if cut >= 0:
            releasable = cut
            self.finish_reason = "stop"
        elif final:
            releasable = len(text)
        else:
            releasable = stop.safe_length(text) if stop else len(text)
        start = 0
        n_released = 0
        for token_id, token_text, score in held:
            end = start + len(token_text)
            last_unfinished = not final and n_released == len(held) - 1 and decoder.pending
            if end > releasable or last_unfinished:
                if cut >= 0 and start < cut:  # the token the stop string starts in: its text before it
                    yield self.emit(token_id, token_text[: cut - start], score)
                break
            yield self.emit(token_id, token_text, score)
            n_released += 1
            start = end
        del held[:n_released]
