"""Engine results -> OpenAI response bodies and stream chunks.

:class:`CompletionFormat` (``/v1/completions``) and :class:`ChatFormat` (``/v1/chat/completions``)
turn the tokens of one job and how it ended into the whole response, or into the chunks of a
stream: ``start()`` (chat's role chunk), ``tokens(...)`` per token, ``end(...)`` (the finish reason
and timings, then ``usage`` in a chunk of its own when the client asked with
``stream_options.include_usage``). Finish reasons: end-of-text and stop strings are "stop", the
token limit and a full context are "length".
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import schemas

if TYPE_CHECKING:
    from ..generation import FinishReason, Timings, Token
    from ..tokenizer import Tokenizer


def openai_finish_reason(reason: FinishReason) -> schemas.FinishReason:
    return "length" if reason in ("length", "context") else "stop"


def usage(prompt_tokens: int, timings: Timings) -> schemas.Usage:
    return schemas.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=timings.generated_tokens,
        total_tokens=prompt_tokens + timings.generated_tokens,
    )


def timings_body(timings: Timings) -> schemas.Timings:
    steps = max(timings.generated_tokens - 1, 0)

    def rate(n: int, ms: float) -> float | None:
        return n / ms * 1e3 if ms > 0 and n > 0 else None

    return schemas.Timings(
        cached_n=timings.reused_tokens,
        prompt_n=timings.prompt_tokens,
        prompt_ms=timings.prompt_ms,
        prompt_per_second=rate(timings.prompt_tokens, timings.prompt_ms),
        predicted_n=timings.generated_tokens,
        predicted_ms=timings.generation_ms,
        predicted_per_token_ms=timings.generation_ms / steps if steps else None,
        predicted_per_second=rate(steps, timings.generation_ms),
    )


def alternatives(token: Token, n: int) -> list[tuple[int, float]]:
    """The ``n`` most likely tokens at this position with their logprobs, most likely first.

    The engine gives them as ``Token.top_logprobs`` when asked (``top_logprobs=n``); where it gives
    none, the chosen token stands alone.
    """
    if n <= 0:
        return []
    top = getattr(token, "top_logprobs", None)
    if top is None:
        return [(token.id, token.logprob if token.logprob is not None else 0.0)]
    return [(int(token_id), float(logprob)) for token_id, logprob in top[:n]]


class _Format:
    def __init__(self, model_id: str, tokenizer: Tokenizer, top_logprobs: int | None, prefix: str) -> None:
        self.id = f"{prefix}-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.model_id = model_id
        self.tokenizer = tokenizer
        self.top_logprobs = top_logprobs

    def _token_text(self, token_id: int) -> tuple[str, list[int]]:
        # A token can hold part of a UTF-8 character: its text shows U+FFFD, its bytes are exact.
        raw = self.tokenizer.token_bytes(token_id)
        return raw.decode("utf-8", errors="replace"), list(raw)


class CompletionFormat(_Format):
    """``text_completion`` objects; logprobs in the legacy parallel-lists format."""

    def __init__(self, model_id: str, tokenizer: Tokenizer, top_logprobs: int | None) -> None:
        super().__init__(model_id, tokenizer, top_logprobs, "cmpl")

    def logprobs(self, tokens: Sequence[Token], text_offset: int = 0) -> schemas.CompletionLogprobs | None:
        if self.top_logprobs is None:
            return None
        return schemas.CompletionLogprobs(
            tokens=[token.text for token in tokens],  # joined, they are the text
            token_logprobs=[token.logprob or 0.0 for token in tokens],
            top_logprobs=[
                {self._token_text(i)[0]: lp for i, lp in alternatives(token, self.top_logprobs)} for token in tokens
            ],
            text_offset=[text_offset + offset for offset in _offsets(tokens)],
        )

    def _body(self, choice: schemas.CompletionChoice, **extra: object) -> schemas.Completion:
        return schemas.Completion(id=self.id, created=self.created, model=self.model_id, choices=[choice], **extra)

    def response(self, tokens: Sequence[Token], reason: FinishReason, timings: Timings, prompt_tokens: int) -> str:
        choice = schemas.CompletionChoice(
            text="".join(token.text for token in tokens),
            logprobs=self.logprobs(tokens),
            finish_reason=openai_finish_reason(reason),
        )
        return self._body(choice, usage=usage(prompt_tokens, timings), timings=timings_body(timings)).model_dump_json()

    def start(self) -> list[str]:
        return []

    def tokens(self, tokens: Sequence[Token], text_offset: int) -> list[str]:
        return [
            self._body(
                schemas.CompletionChoice(text=token.text, logprobs=self.logprobs([token], text_offset + offset))
            ).model_dump_json()
            for offset, token in zip(_offsets(tokens), tokens)
        ]

    def end(self, reason: FinishReason, timings: Timings, prompt_tokens: int, include_usage: bool) -> list[str]:
        final = self._body(
            schemas.CompletionChoice(text="", finish_reason=openai_finish_reason(reason)), timings=timings_body(timings)
        )
        chunks = [final.model_dump_json()]
        if include_usage:
            chunks.append(
                schemas.Completion(
                    id=self.id,
                    created=self.created,
                    model=self.model_id,
                    choices=[],
                    usage=usage(prompt_tokens, timings),
                ).model_dump_json()
            )
        return chunks


def _offsets(tokens: Sequence[Token]) -> list[int]:
    """Each token's character offset from the first of ``tokens``."""
    offsets, offset = [], 0
    for token in tokens:
        offsets.append(offset)
        offset += len(token.text)
    return offsets


class ChatFormat(_Format):
    """``chat.completion`` objects and ``chat.completion.chunk`` stream chunks."""

    def __init__(self, model_id: str, tokenizer: Tokenizer, top_logprobs: int | None) -> None:
        super().__init__(model_id, tokenizer, top_logprobs, "chatcmpl")

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

    def response(self, tokens: Sequence[Token], reason: FinishReason, timings: Timings, prompt_tokens: int) -> str:
        choice = schemas.ChatChoice(
            message=schemas.AssistantMessage(content="".join(token.text for token in tokens)),
            logprobs=self.logprobs(tokens),
            finish_reason=openai_finish_reason(reason),
        )
        return schemas.ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model_id,
            choices=[choice],
            usage=usage(prompt_tokens, timings),
            timings=timings_body(timings),
        ).model_dump_json()

    def _chunk(self, choices: list[schemas.ChatChunkChoice], **extra: object) -> str:
        return schemas.ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model_id, choices=choices, **extra
        ).model_dump_json()

    def start(self) -> list[str]:
        return [self._chunk([schemas.ChatChunkChoice(delta={"role": "assistant", "content": ""})])]

    def tokens(self, tokens: Sequence[Token], text_offset: int) -> list[str]:
        return [
            self._chunk([schemas.ChatChunkChoice(delta={"content": token.text}, logprobs=self.logprobs([token]))])
            for token in tokens
        ]

    def end(self, reason: FinishReason, timings: Timings, prompt_tokens: int, include_usage: bool) -> list[str]:
        final = schemas.ChatChunkChoice(delta={}, finish_reason=openai_finish_reason(reason))
        chunks = [self._chunk([final], timings=timings_body(timings))]
        if include_usage:
            chunks.append(self._chunk([], usage=usage(prompt_tokens, timings)))
        return chunks


ResponseFormat = CompletionFormat | ChatFormat
