"""One completion's decoding, step by step: the logic every driver of the engine shares.

A driver owns the engine calls; a :class:`Decoding` owns everything else about one completion:
the prompt's tokens still to evaluate and the prefix a session already holds, ``max_tokens``,
end-of-text, what to do when the context is full (error, stop, shift), stop strings and the text
held back while it could start one, UTF-8 characters split over tokens, log-probabilities,
timings and cancellation. A driver repeats::

    tokens = decoding.next_tokens()    # None: the completion has ended (finish_reason is set)
    draft = decoding.draft()           # guessed tokens to verify after them ([] without lookup)
    results = ...                      # evaluate tokens (+ draft) on decoding.session, sample with decoding.sampler
    decoding.accept_steps(results)     # the list Session.evaluate_and_verify returns
    for token in decoding.hand_out():  # the tokens that step released (and those an end released)
        ...

and calls :meth:`Decoding.end` once it stops driving (at the end, on an error, or when its caller
stops early). A driver may evaluate only the first part of a long prompt in a step, without
sampling, and report it with :meth:`Decoding.accept_prompt_chunk`.

The drivers: :class:`~gptj_ggml.Generation` (one session, ``Session.evaluate_and_sample`` per
step), :class:`~gptj_ggml.batch.BatchGeneration` and the server's scheduler (many, one
``BatchEvaluator.evaluate_and_sample`` per step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ContextFullError
from .generation import Timings, Token
from .speculation import PromptLookup, Speculation
from .stop import StopStrings

if TYPE_CHECKING:
    from . import _core
    from .generation import ContextPolicy, FinishReason
    from .tokenizer import Tokenizer

#: A sampled token's log-probability and the most likely alternatives, (id, logprob) pairs.
_Score = tuple[float, list[tuple[int, float]]]

#: What one engine step returns for one session: (token, logprob, eval_ms, sample_ms, top logprobs).
StepResult = tuple[int, float, float, float, list[tuple[int, float]]]


@dataclass(frozen=True)
class DecodingOptions:
    """The checked options of one completion (see ``Session.generate``), sampler settings aside."""

    max_tokens: int
    stop: StopStrings
    logprobs: bool
    top_logprobs: int
    on_context_full: ContextPolicy
    n_keep: int
    is_cancelled: Callable[[], bool] | None = None
    lookup: PromptLookup | None = None


class Decoding:
    """The state of one completion between engine steps (see the module's docstring).

    Args:
        session: the engine session whose cache the completion grows.
        sampler: the completion's own sampler (its settings, seed and random state).
        tokenizer: turns ids into text.
        prompt: the whole prompt; what ``session`` already holds of it is kept, the rest evaluated.
        options: everything else the completion was asked.
        seed: the sampler's seed, reported back.
        load_ms: the model's load time, repeated in the timings.
        on_end: called once when the completion ends (whichever way).
    """

    def __init__(
        self,
        session: _core.Session,
        sampler: _core.Sampler,
        tokenizer: Tokenizer,
        prompt: list[int],
        options: DecodingOptions,
        seed: int,
        load_ms: float = 0.0,
        on_end: Callable[[Decoding], None] | None = None,
    ) -> None:
        self.session = session
        self.sampler = sampler
        self.prompt = prompt
        self.options = options
        self.seed = seed
        self.on_end = on_end
        self.finish_reason: FinishReason | None = None
        #: The error that ended the completion (``on_context_full="error"``): a driver raises it after
        #: :meth:`hand_out`; :meth:`end` then makes the finish reason "cancelled".
        self.error: ContextFullError | None = None
        #: What was handed out so far: ids, texts and (when asked) log-probabilities.
        self.tokens: list[int] = []
        self.texts: list[str] = []
        self.logprobs: list[float] = []
        self.load_ms = load_ms
        self.reused = self.prompt_tokens = self.generated = 0
        self.prompt_ms = self.generation_ms = self.sample_ms = self.total_ms = 0.0
        # The tokens the next step evaluates; None until the first step (the prefix is not yet reused).
        self._pending: list[int] | None = None
        # Tokens sampled but not yet released: (id, text, (logprob, top logprobs)). They wait while their text
        # could be the start of a stop string, or while a UTF-8 character is unfinished.
        self._held: list[tuple[int, str, _Score]] = []
        self._released: list[Token] = []
        self._decoder = tokenizer.stream_decoder()
        self._eos_id = tokenizer.eos_id
        self._started: float | None = None
        self._ended = False
        #: Prompt lookup's drafts and what they gave (None: no speculation).
        self.speculation = Speculation(options.lookup, prompt) if options.lookup is not None else None

    # -- what a driver asks -------------------------------------------------------------
    @property
    def reading_prompt(self) -> bool:
        """Whether the next step still evaluates prompt tokens (no token sampled yet)."""
        return self.generated == 0

    def next_tokens(self) -> list[int] | None:
        """The tokens the next step must evaluate, or None when the completion has ended.

        The first call keeps what the session holds of the prompt (the rest is returned).
        Before every step: ``max_tokens``, the context policy (a "shift" happens here) and
        ``is_cancelled`` are checked. An end may release held tokens (see :meth:`hand_out`);
        with ``on_context_full="error"`` it sets :attr:`error` instead of raising, so that a
        driver hands out the tokens first.
        """
        if self.finish_reason is not None or self.error is not None:
            return None
        pending = self._pending
        if pending is None:
            self._started = time.perf_counter()
            pending = self._pending = self._reuse_prefix()
        options = self.options
        if self.generated == options.max_tokens:
            self._finish("length")
            return None
        session = self.session
        if session.n_past + len(pending) > session.n_ctx:
            if options.on_context_full == "stop":
                self._finish("context")
                return None
            if options.on_context_full == "error":
                self._release_last()
                if self.finish_reason != "stop":
                    self.error = ContextFullError(
                        f"the context is full ({session.n_ctx} tokens); pass on_context_full='shift' "
                        "to drop old tokens, 'stop' to end there, or use a larger n_ctx"
                    )
                return None
            self._shift()
        if options.is_cancelled is not None and options.is_cancelled():
            self._held.clear()  # whoever cancelled no longer reads
            self.finish_reason = "cancelled"
            return None
        return pending

    def draft(self, base_tokens: int = 1) -> list[int]:
        """Tokens guessed to follow the next step's token, for the step to verify (call after
        :meth:`next_tokens`): none without ``lookup``, while reading the prompt, or where the
        policy expects no gain. ``base_tokens``: what the engine call evaluates besides them."""
        speculation, pending, session = self.speculation, self._pending, self.session
        if speculation is None or self.generated == 0 or pending is None or len(pending) != 1:
            return []
        # The draft must fit in the context, and each accepted token counts toward max_tokens.
        limit = min(session.n_ctx - session.n_past - 1, self.options.max_tokens - self.generated - 1)
        return speculation.draft(limit, base_tokens) if limit > 0 else []

    def accept_steps(self, results: list[StepResult], n_evaluated: int | None = None) -> None:
        """Take the results of evaluating :meth:`next_tokens` and :meth:`draft` and verifying the
        draft (one result per token sampled: the accepted drafts, then one more). An end among them
        (end-of-text, a stop string) drops the rest, and the session is cut back to where it would
        be had the tokens come one step at a time. ``n_evaluated``: the tokens the engine call
        evaluated, all items together (None when it read a prompt too: no cost to learn from)."""
        reading_prompt = self.generated == 0
        # The session holds the step's tokens and the accepted drafts (all but the last result).
        held_before_last = self.session.n_past - (len(results) - 1)
        consumed = 0
        for result in results:
            self.accept(result)
            consumed += 1
            if self.finish_reason is not None:
                break
        if consumed < len(results):
            self.session.truncate(held_before_last + consumed - 1)
        if self.speculation is not None:
            step_ms = sum(result[2] + result[3] for result in results)
            produced = [result[0] for result in results]
            self.speculation.record_step(produced, None if reading_prompt else n_evaluated, step_ms)

    def accept(self, result: StepResult) -> None:
        """Take the result of evaluating all of :meth:`next_tokens` and sampling the next token."""
        token_id, logprob, eval_ms, sample_ms, top = result
        if self.generated == 0:
            self.prompt_ms += eval_ms + sample_ms
        else:
            self.generation_ms += eval_ms + sample_ms
        self.sample_ms += sample_ms
        self.generated += 1
        if token_id == self._eos_id:
            self._finish("eos")
            return
        self._held.append((token_id, self._decoder.feed(token_id), (logprob, top)))
        self._release_held(final=False)
        self._pending = [token_id]

    def accept_prompt_chunk(self, n_tokens: int, eval_ms: float) -> None:
        """Take the result of evaluating only the first ``n_tokens`` of a prompt's remaining
        tokens (fewer than all of them), without sampling."""
        assert self._pending is not None and self.generated == 0 and 0 < n_tokens < len(self._pending)
        self._pending = self._pending[n_tokens:]
        self.prompt_ms += eval_ms

    def hand_out(self) -> Iterator[Token]:
        """Yield the released tokens not yet handed out, each recorded (``tokens``, ``texts``) as it goes."""
        released = self._released
        while released:
            token = released.pop(0)
            self.tokens.append(token.id)
            self.texts.append(token.text)
            if token.logprob is not None:
                self.logprobs.append(token.logprob)
            yield token

    def cancel(self) -> None:
        """End now, as "cancelled" (unless it has ended already): held text and released tokens
        not yet handed out are dropped."""
        if self.finish_reason is None:
            self._held.clear()
            self._released.clear()
        self.end()

    def end(self) -> None:
        """The driver stops here: an unfinished completion becomes "cancelled" (held text is
        dropped); the end is timed and reported to ``on_end``, once."""
        if self._ended:
            return
        self._ended = True
        if self.finish_reason is None:
            self.finish_reason = "cancelled"
        if self._started is not None:
            self.total_ms = (time.perf_counter() - self._started) * 1e3
        if self.on_end is not None:
            self.on_end(self)

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
            drafted_tokens=self.speculation.drafted if self.speculation is not None else 0,
            accepted_tokens=self.speculation.accepted if self.speculation is not None else 0,
        )

    # -- the steps' parts -----------------------------------------------------------------
    def _reuse_prefix(self) -> list[int]:
        """Keep the longest common prefix of the cache and the prompt; return what is left to evaluate."""
        n_common = 0
        for cached, wanted in zip(self.session.history, self.prompt):
            if cached != wanted:
                break
            n_common += 1
        # At least one token is evaluated, for fresh logits.
        n_common = min(n_common, len(self.prompt) - 1)
        self.session.truncate(n_common)
        self.reused = n_common
        self.prompt_tokens = len(self.prompt) - n_common
        return self.prompt[n_common:]

    def _shift(self) -> None:
        n_keep = self.options.n_keep
        n_discard = (self.session.n_past - n_keep) // 2
        started = time.perf_counter()
        self.session.discard(n_keep, n_discard)
        self.generation_ms += (time.perf_counter() - started) * 1e3

    def _finish(self, reason: FinishReason) -> None:
        # The held tokens are released (a stop string their tail completes makes it "stop").
        self.finish_reason = reason
        self._release_last()

    def _emit(self, token_id: int, text: str, score: _Score) -> None:
        if self.options.logprobs:
            logprob, top = score
            self._released.append(Token(token_id, text, logprob, tuple(top) if self.options.top_logprobs else None))
        else:
            self._released.append(Token(token_id, text))

    def _release_last(self) -> None:
        """At the end: an unfinished character becomes U+FFFD on the last token, then everything
        held is released (up to a stop string, if the tail completes one)."""
        tail = self._decoder.flush()
        held = self._held
        if tail and held:
            token_id, text, score = held[-1]
            held[-1] = (token_id, text + tail, score)
        self._release_held(final=True)

    def _release_held(self, final: bool) -> None:
        """Release the held tokens whose text is decided, and end at a stop string."""
        held = self._held
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
            last_unfinished = not final and n_released == len(held) - 1 and self._decoder.pending
            if end > releasable or last_unfinished:
                if cut >= 0 and start < cut:  # the token the stop string starts in: its text before it
                    self._emit(token_id, token_text[: cut - start], score)
                break
            self._emit(token_id, token_text, score)
            n_released += 1
            start = end
        del held[:n_released]
        if cut >= 0:
            held.clear()
