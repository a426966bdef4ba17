"""The OpenAI request and response bodies the server speaks, as pydantic models.

Requests ignore fields they do not know (OpenAI's clients send extras, such as ``tools: []``), but a
field they know with a bad value is a 400 that names it. The sampler's fields are not listed here:
:data:`SamplingFields` is made from :data:`gptj_ggml.sampling.SETTINGS`, so a new sampler setting
is a new request field with no change to the server. OpenAI's names (``temperature``, ``top_p``,
``presence_penalty``, ``frequency_penalty``) are the settings' own; the others (``top_k``,
``min_p``, ``typical_p``, ``repeat_penalty``, ``repeat_last_n``) are extras, as llama.cpp's
server takes them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic_core import PydanticCustomError

from ..sampling import SETTINGS, SamplingSetting
from ..speculation.prompt_lookup import MAX_DRAFT

#: Stop strings a request may give (OpenAI allows 4; a chat template adds its own besides).
MAX_STOP_STRINGS = 16
#: Alternatives per token: OpenAI's limits for chat (``top_logprobs``) and completions (``logprobs``).
MAX_TOP_LOGPROBS_CHAT = 20
MAX_LOGPROBS_COMPLETIONS = 5
#: Choices a request may ask for (``n``). Each choice is a whole generation on a slot of its own, so
#: one request of 16 already keeps 4 slots busy four times over; more would let one client take
#: most of the queue (64 by default). The server may allow fewer: its slots plus its queue.
MAX_CHOICES = 16


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _sampling_field(setting: SamplingSetting) -> tuple[Any, Any]:
    """The request field of one sampler setting: optional (None: the server's default), in its range."""
    bounds: dict[str, Any] = {}
    cast = setting.type
    if not math.isinf(setting.low):
        bounds["ge" if setting.low_inclusive else "gt"] = cast(setting.low)
    if not math.isinf(setting.high):
        bounds["le" if setting.high_inclusive else "lt"] = cast(setting.high)
    if setting.type is float:
        bounds["allow_inf_nan"] = False
    description = f"{setting.help} (range {setting.range_text}; default: the server's)"
    return (setting.type | None, Field(None, description=description, **bounds))


#: A base model with one optional field per sampler setting, made from the settings record.
SamplingFields: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "SamplingFields", __base__=_Request, **{setting.name: _sampling_field(setting) for setting in SETTINGS}
)


class StreamOptions(_Request):
    include_usage: bool = False


def _unsupported(message: str) -> PydanticCustomError:
    return PydanticCustomError("unsupported", message)


class _GenerationRequest(SamplingFields):  # type: ignore[misc, valid-type]
    """What completions and chat completions share."""

    model: str | None = None
    max_tokens: int | None = Field(
        None, ge=0, description="the most tokens to generate (default: the rest of the context)"
    )
    stop: str | list[str] | None = Field(None, validate_default=True)  # always a list once validated
    seed: int | None = None
    logit_bias: dict[str, float] | None = Field(
        None,
        validate_default=True,  # always a {token id: value} dict once validated
        description="token id (as a string, as OpenAI sends it) -> value added to its logit, in [-100, 100]",
    )
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices to generate, each a generation of its own")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted, not used
    ignore_eos: bool = False
    lookup: int | None = Field(
        None,
        ge=0,
        le=MAX_DRAFT,
        description="prompt lookup speculative decoding: the most tokens guessed per step from earlier text (0: "
        "off; default: the server's); the output is unchanged, only faster where it repeats the prompt",
    )

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> list[str]:
        strings = [] if stop is None else [stop] if isinstance(stop, str) else stop
        if len(strings) > MAX_STOP_STRINGS:
            raise _unsupported(f"at most {MAX_STOP_STRINGS} stop strings, got {len(strings)}")
        if any(s == "" for s in strings):
            raise _unsupported("a stop string must not be empty")
        return strings

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[int, float]:
        result: dict[int, float] = {}
        for key, value in (bias or {}).items():
            try:
                token_id = int(key)
            except ValueError:
                raise _unsupported(f"keys must be token ids, got {key!r}") from None
            if token_id < 0:
                raise _unsupported(f"token ids are >= 0, got {key!r}")
            if not -100 <= value <= 100:
                raise _unsupported(f"values are in [-100, 100], got {value} for {key!r}")
            result[token_id] = value
        return result


class CompletionRequest(_GenerationRequest):
    """``POST /v1/completions``: continue a prompt (text, or token ids)."""

    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS_COMPLETIONS)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: Any) -> str | list[int]:
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise _unsupported(f"one prompt per request is supported, got a list of {len(prompt)}")
            return prompt[0]
        return prompt

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool) -> bool:
        if echo:
            raise _unsupported("echo is not supported")
        return echo

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, best_of: int | None) -> int | None:
        if best_of not in (None, 1):
            raise _unsupported("only best_of=1 is supported")
        return best_of

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, suffix: str | None) -> str | None:
        if suffix:
            raise _unsupported("suffix (insertion) is not supported")
        return suffix


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    # "developer" is OpenAI's newer name for "system".
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None  # accepted, not used

    def text(self) -> str:
        """The content as one string (text parts joined; a missing content is empty)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict[str, str]:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class ChatCompletionRequest(_GenerationRequest):
    """``POST /v1/chat/completions``: the assistant's reply to ``messages``, through a chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0, description="OpenAI's newer name for max_tokens")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS_CHAT)
    chat_template: str | None = Field(None, description="a named template (see GET /props); no file paths")
    chat_template_kwargs: dict[str, str | int | float | bool] | None = Field(
        None, description="more variables for the template ({'char': 'Aqua'} for pygmalion)"
    )

    @field_validator("chat_template_kwargs")
    @classmethod
    def _plain_names(cls, variables: dict[str, Any] | None) -> dict[str, Any] | None:
        reserved = {"messages", "add_generation_prompt", "bos_token", "eos_token"}
        for name in variables or {}:
            if not name.isidentifier() or name in reserved:
                raise _unsupported(f"{name!r} cannot be a template variable")
        return variables


class TokenizeRequest(_Request):
    """``POST /tokenize``: text -> token ids, as prompts are tokenized (special tokens' text is plain text)."""

    content: str
    add_special: bool = Field(False, description="put the beginning-of-text token first")


class DetokenizeRequest(_Request):
    """``POST /detokenize``: token ids -> text."""

    tokens: list[int]


# -- responses ----------------------------------------------------------------------------------


class Usage(BaseModel):
    """Token counts: the whole prompt (reused tokens included) and every token generated
    (an end-of-text that ended the reply, and the tokens of a stop string, included)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(BaseModel):
    """Where the time went, in llama.cpp's server's names: ``cached_n`` prompt tokens reused from the
    slot's cache (not evaluated), ``prompt_n`` prompt tokens evaluated in ``prompt_ms`` (which
    includes sampling the first token), ``predicted_n`` tokens generated, ``predicted_ms`` the steps
    after the first (``predicted_n - 1`` of them, so ``predicted_per_second`` is their rate), and
    ``ttft_ms`` from the request's arrival to its first token (queueing included)."""

    prompt_n: int
    prompt_ms: float
    cached_n: int
    predicted_n: int
    predicted_ms: float
    predicted_per_second: float | None
    ttft_ms: float | None
    draft_n: int
    draft_n_accepted: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]
    refusal: None = None


class CompletionLogprobs(BaseModel):
    """The legacy format: parallel lists; ``text_offset`` counts characters of the generated text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


FinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    timings: Timings | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    timings: Timings


class ChatChunkChoice(BaseModel):
    index: int = 0
    #: ``{"role": "assistant", "content": ""}`` in the first chunk, ``{"content": text}`` after, ``{}`` in the last.
    delta: dict[str, str]
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    timings: Timings | None = None
