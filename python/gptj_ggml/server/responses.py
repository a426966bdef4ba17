"""Engine results -> OpenAI response bodies and stream chunks.

:class:`CompletionFormat` (``/v1/completions``) and :class:`ChatFormat` (``/v1/chat/completions``)
turn the tokens of a request's choices (one job each) and their :class:`Ending` into the whole
response, or into the chunks of a stream: ``start(n)`` (chat's role chunk, one per choice),
``tokens(...)`` (a chunk per token, with its choice's ``index``), ``end(...)`` (a choice's finish
reason and ``timings``), and ``usage_chunk(...)`` (``usage`` in a chunk of its own with empty
``choices``, once after every choice ended, when the client asked with
``stream_options.include_usage``). Finish reasons: end-of-text and stop strings are "stop", the
token limit and a full context are "length".

``usage`` is OpenAI's: the prompt counted once (the choices share it), the completion tokens summed
over the choices. ``timings`` describe one generation: a streamed choice's finish chunk carries its
own; the whole response carries choice 0's.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import schemas

if TYPE_CHECKING:
    from ..generation import FinishReason, Timings, Token
    from ..tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class Ending:
    """How a job ended, and what its response reports about it.

    Attributes:
        finish_reason: the engine's (``Generation.finish_reason``).
        timings: the engine's.
        ttft_ms: from the request's arrival to this job's first token, as the server saw it.
    """

    finish_reason: FinishReason
    timings: Timings
    ttft_ms: float | None

    @property
    def openai_finish_reason(self) -> schemas.FinishReason:
        return "length" if self.finish_reason in ("length", "context") else "stop"

    def timings_body(self) -> schemas.Timings:
        timings = self.timings
        steps = timings.generated_tokens - 1
        return schemas.Timings(
            prompt_n=timings.prompt_tokens,
            prompt_ms=timings.prompt_ms,
            cached_n=timings.reused_tokens,
            predicted_n=timings.generated_tokens,
            predicted_ms=timings.generation_ms,
            predicted_per_second=steps / timings.generation_ms * 1e3
            if steps > 0 and timings.generation_ms > 0
            else None,
            ttft_ms=self.ttft_ms,
            draft_n=timings.drafted_tokens,
            draft_n_accepted=timings.accepted_tokens,
        )


def alternatives(token: Token, n: int) -> list[tuple[int, float]]:
    """The ``n`` most likely tokens at this position with their logprobs, most likely first
    (the engine's ``Token.top_logprobs``, asked for with ``top_logprobs=n``)."""
    return [(int(token_id), float(logprob)) for token_id, logprob in (token.top_logprobs or ())[:n]]


def _offsets(tokens: Sequence[Token]) -> list[int]:
    """Each token's character offset from the start of the first of ``tokens``."""
    offsets, offset = [], 0
    for token in tokens:
        offsets.append(offset)
        offset += len(token.text)
    return offsets


#: A finished choice: its tokens and how it ended (its index is its place in the list).
FinishedChoice = tuple[Sequence["Token"], Ending]


class _Format:
    def __init__(
        self, model_id: str, tokenizer: Tokenizer, top_logprobs: int | None, prompt_tokens: int, prefix: str
    ) -> None:
        self.id = f"{prefix}-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.model_id = model_id
        self.tokenizer = tokenizer
        #: Alternatives per token to report; None: no logprobs at all.
        self.top_logprobs = top_logprobs
        #: The whole prompt, reused tokens included (``usage.prompt_tokens``).
        self.prompt_tokens = prompt_tokens

    def usage(self, endings: Sequence[Ending]) -> schemas.Usage:
        # Every token generated counts, the end-of-text or stop string that ended it included.
        generated = sum(ending.timings.generated_tokens for ending in endings)
        return schemas.Usage(
            prompt_tokens=self.prompt_tokens, completion_tokens=generated, total_tokens=self.prompt_tokens + generated
        )

    def _token_text(self, token_id: int) -> tuple[str, list[int]]:
        # A token can hold part of a UTF-8 character: its text shows U+FFFD, its bytes are exact.
        raw = self.tokenizer.token_bytes(token_id)
        return raw.decode("utf-8", errors="replace"), list(raw)


class CompletionFormat(_Format):
    """``text_completion`` objects; logprobs in the legacy parallel-lists format."""

    def __init__(self, model_id: str, tokenizer: Tokenizer, top_logprobs: int | None, prompt_tokens: int) -> None:
        super().__init__(model_id, tokenizer, top_logprobs, prompt_tokens, "cmpl")

    def logprobs(self, tokens: Sequence[Token], text_offset: int = 0) -> schemas.CompletionLogprobs | None:
        if self.top_logprobs is None:
            return None
        n = self.top_logprobs
        return schemas.CompletionLogprobs(
            tokens=[token.text for token in tokens],  # joined, they are the text
            token_logprobs=[token.logprob or 0.0 for token in tokens],
            top_logprobs=[{self._token_text(i)[0]: lp for i, lp in alternatives(token, n)} for token in tokens],
            text_offset=[text_offset + offset for offset in _offsets(tokens)],
        )

    def _body(self, choices: list[schemas.CompletionChoice], **extra: object) -> str:
        return schemas.Completion(
            id=self.id, created=self.created, model=self.model_id, choices=choices, **extra
        ).model_dump_json()

    def response(self, choices: Sequence[FinishedChoice]) -> str:
        bodies = [
            schemas.CompletionChoice(
                index=index,
                text="".join(token.text for token in tokens),
                logprobs=self.logprobs(tokens),
                finish_reason=ending.openai_finish_reason,
            )
            for index, (tokens, ending) in enumerate(choices)
        ]
        endings = [ending for _, ending in choices]
        return self._body(bodies, usage=self.usage(endings), timings=endings[0].timings_body())

    def start(self, n: int) -> list[str]:
        return []

    def tokens(self, tokens: Sequence[Token], text_offset: int, index: int) -> list[str]:
        """A chunk per token of choice ``index``; ``text_offset``: characters of its text sent before them."""
        return [
            self._body(
                [
                    schemas.CompletionChoice(
                        index=index, text=token.text, logprobs=self.logprobs([token], text_offset + offset)
                    )
                ]
            )
            for offset, token in zip(_offsets(tokens), tokens)
        ]

    def end(self, ending: Ending, index: int) -> str:
        final = schemas.CompletionChoice(index=index, text="", finish_reason=ending.openai_finish_reason)
        return self._body([final], timings=ending.timings_body())

    def usage_chunk(self, endings: Sequence[Ending]) -> str:
        return self._body([], usage=self.usage(endings))


class ChatFormat(_Format):
    """``chat.completion`` objects and ``chat.completion.chunk`` stream chunks."""

    def __init__(self, model_id: str, tokenizer: Tokenizer, top_logprobs: int | None, prompt_tokens: int) -> None:
        super().__init__(model_id, tokenizer, top_logprobs, prompt_tokens, "chatcmpl")

    def logprobs(self, tokens: Sequence[Token]) -> schemas.ChatLogprobs | None:
        if self.top_logprobs is None:
            return None
        content = []
        for token in tokens:
            text, raw = self._token_text(token.id)
            top = []
            for token_id, logprob in alternatives(token, self.top_logprobs):
                top_text, top_raw = self._token_text(token_id)
                top.append(schemas.TopLogprob(token=top_text, logprob=logprob, bytes=top_raw))
            content.append(schemas.TokenLogprob(token=text, logprob=token.logprob or 0.0, bytes=raw, top_logprobs=top))
        return schemas.ChatLogprobs(content=content)

    def response(self, choices: Sequence[FinishedChoice]) -> str:
        bodies = [
            schemas.ChatChoice(
                index=index,
                message=schemas.AssistantMessage(content="".join(token.text for token in tokens)),
                logprobs=self.logprobs(tokens),
                finish_reason=ending.openai_finish_reason,
            )
            for index, (tokens, ending) in enumerate(choices)
        ]
        endings = [ending for _, ending in choices]
        return schemas.ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model_id,
            choices=bodies,
            usage=self.usage(endings),
            timings=endings[0].timings_body(),
        ).model_dump_json()

    def _chunk(self, choices: list[schemas.ChatChunkChoice], **extra: object) -> str:
        return schemas.ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model_id, choices=choices, **extra
        ).model_dump_json()

    def start(self, n: int) -> list[str]:
        return [
            self._chunk([schemas.ChatChunkChoice(index=index, delta={"role": "assistant", "content": ""})])
            for index in range(n)
        ]

    def tokens(self, tokens: Sequence[Token], text_offset: int, index: int) -> list[str]:
        return [
            self._chunk(
                [schemas.ChatChunkChoice(index=index, delta={"content": token.text}, logprobs=self.logprobs([token]))]
            )
            for token in tokens
        ]

    def end(self, ending: Ending, index: int) -> str:
        final = schemas.ChatChunkChoice(index=index, delta={}, finish_reason=ending.openai_finish_reason)
        return self._chunk([final], timings=ending.timings_body())

    def usage_chunk(self, endings: Sequence[Ending]) -> str:
        return self._chunk([], usage=self.usage(endings))


ResponseFormat = CompletionFormat | ChatFormat
