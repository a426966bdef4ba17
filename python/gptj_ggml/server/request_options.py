"""An OpenAI request -> the prompt's token ids and the options of ``Session.generate``.

Everything that can be wrong with a request is found here, before it takes a slot, and raised as a
400 :class:`~gptj_ggml.server.errors.ApiError` naming the field: a token id or ``logit_bias`` key
outside the vocabulary, an unknown chat template, messages the template refuses, a prompt that
leaves no room in the context.

``max_tokens``: capped by the context (``n_ctx`` minus the prompt's tokens). When a request gives
none, the server's default (``gptj-ggml serve --max-tokens``), which is ``n_ctx`` unless set: the
whole rest of the context, as llama.cpp's server's ``n_predict: -1`` and OpenAI's chat default ("up
to the model's limit"). A reply then ends by end-of-text, a stop string or the context, and a client
that wants less says so (``max_tokens``) or goes away (it is cancelled at once).

``n``: the choices, each a job of its own. At most :data:`~.schemas.MAX_CHOICES`, and at most what
the server can hold at once (its slots plus its queue): more could never be admitted, so it is a
400 naming ``n`` rather than a 503 to retry. Seeds: a request's ``seed`` s gives choice i the seed
s + i (so choice i is what an n=1 request with seed s + i generates); without one, each choice
draws a fresh seed.

``lookup``: prompt lookup speculative decoding's most drafted tokens per step (0: off), the
server's default (``gptj-ggml serve --lookup``) when a request gives none. It changes only how
fast a reply comes, never its tokens.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .. import _checks
from ..chat import ChatTemplate, ChatTemplateError, named_template
from ..sampling import SETTINGS, SamplingParams
from ..speculation.prompt_lookup import MAX_DRAFT
from .errors import ApiError, bad_request

if TYPE_CHECKING:
    from ..model import Model
    from .schemas import ChatCompletionRequest, CompletionRequest, _GenerationRequest


@dataclasses.dataclass(frozen=True)
class PreparedRequest:
    """A checked request, ready for the scheduler.

    Attributes:
        prompt: the whole prompt as token ids.
        options: keyword arguments of ``Session.generate`` (those of choice 0; see :meth:`choice_options`).
        top_logprobs: alternatives per token to report (0: the chosen token's logprob only); None: no logprobs.
        n: the choices to generate.
    """

    prompt: list[int]
    options: dict[str, Any]
    top_logprobs: int | None
    n: int = 1

    def choice_options(self, index: int) -> dict[str, Any]:
        """The ``Session.generate`` options of choice ``index``: the request's seed plus ``index``
        (the engine takes seeds modulo 2**64), or None for a fresh one."""
        seed = self.options["seed"]
        return {**self.options, "seed": None if seed is None else seed + index}


class RequestPreparer:
    """Turns requests into :class:`PreparedRequest` for one model and the server's defaults.

    Args:
        model: the served model (its tokenizer and vocabulary size).
        n_ctx: the slots' context size.
        sampling: the server's default sampler settings; a request's fields replace single ones.
        chat_template: the server's template, used unless a request names another.
        max_tokens: the default of ``max_tokens`` (None: ``n_ctx``, the rest of the context).
        capacity: the jobs the server holds at once (slots plus queue), the most choices a
            request may ask for below :data:`~.schemas.MAX_CHOICES` (None: no bound below it).
        lookup: the default of ``lookup``, prompt lookup's most drafted tokens per step (0: off).
    """

    def __init__(
        self,
        model: Model,
        n_ctx: int,
        sampling: SamplingParams,
        chat_template: ChatTemplate,
        max_tokens: int | None = None,
        capacity: int | None = None,
        lookup: int = 0,
    ) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.lookup = _checks.integer("lookup", lookup, minimum=0, maximum=MAX_DRAFT)
        self.capacity = capacity
        self.model = model
        self.n_ctx = n_ctx
        self.sampling = sampling
        self.chat_template = chat_template
        self.max_tokens = n_ctx if max_tokens is None else max_tokens

    def completion(self, request: CompletionRequest) -> PreparedRequest:
        if isinstance(request.prompt, str):
            prompt = self.tokenize(request.prompt, "prompt")
        else:
            prompt = self.checked_ids(request.prompt, "prompt")
        top = request.logprobs
        return self._prepare(request, prompt, "prompt", request.max_tokens, stop=request.stop, top_logprobs=top)

    def chat(self, request: ChatCompletionRequest) -> PreparedRequest:
        template = self.chat_template
        if request.chat_template is not None:
            try:
                template = named_template(request.chat_template)
            except ChatTemplateError as error:
                raise bad_request(str(error), "chat_template") from None
        messages = [message.for_template() for message in request.messages]
        try:
            text = template.render(messages, **(request.chat_template_kwargs or {}))
        except ChatTemplateError as error:
            raise bad_request(str(error), "messages") from None
        prompt = self.tokenize(text, "messages")
        if request.top_logprobs and not request.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
        top = (request.top_logprobs or 0) if request.logprobs else None
        max_tokens = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        stop = [*template.stop, *request.stop]
        return self._prepare(request, prompt, "messages", max_tokens, stop=stop, top_logprobs=top)

    # -- shared ------------------------------------------------------------------------------
    def _prepare(
        self,
        request: _GenerationRequest,
        prompt: list[int],
        prompt_field: str,
        max_tokens: int | None,
        *,
        stop: list[str],
        top_logprobs: int | None,
    ) -> PreparedRequest:
        if self.capacity is not None and request.n > self.capacity:
            raise bad_request(
                f"n={request.n} choices can never run: this server holds {self.capacity} generations at once "
                f"(its slots and its queue); ask for at most {self.capacity}",
                "n",
            )
        prompt = prompt or [self.model.tokenizer.bos_id]  # as Session.generate starts an empty prompt
        room = self.n_ctx - len(prompt)
        if room < 1:
            raise bad_request(
                f"the {prompt_field} take {len(prompt)} tokens, and the context holds {self.n_ctx}: "
                f"no room for a reply (at most {self.n_ctx - 1} prompt tokens)",
                prompt_field,
                "context_length_exceeded",
            )
        options = {
            "sampling": self._sampling(request),
            "max_tokens": min(self.max_tokens if max_tokens is None else max_tokens, room),
            "seed": request.seed,
            "stop": stop,
            "ignore_eos": request.ignore_eos,
            "logprobs": top_logprobs is not None,
            "top_logprobs": top_logprobs or 0,
            "lookup": self.lookup if request.lookup is None else request.lookup,
            # max_tokens already fits; this only guards the count above against an engine change.
            "on_context_full": "stop",
        }
        return PreparedRequest(prompt, options, top_logprobs, request.n)

    def _sampling(self, request: _GenerationRequest) -> SamplingParams:
        changes: dict[str, Any] = {
            s.name: getattr(request, s.name) for s in SETTINGS if getattr(request, s.name) is not None
        }
        if request.logit_bias:
            too_large = [token_id for token_id in request.logit_bias if token_id >= self.model.n_vocab]
            if too_large:
                raise bad_request(
                    f"logit_bias: token id {too_large[0]} is not in the vocabulary (0 to {self.model.n_vocab - 1})",
                    "logit_bias",
                )
            changes["logit_bias"] = request.logit_bias
        try:
            return self.sampling.replace(**changes)
        except (ValueError, TypeError) as error:  # a combination the engine refuses; it names the setting
            named = next((s.name for s in SETTINGS if s.name in str(error)), None)
            raise bad_request(str(error), named) from None

    def tokenize(self, text: str, field: str) -> list[int]:
        """Token ids of ``text``, as the prompts are tokenized (added tokens' text is plain text, so a
        message cannot end the context with ``<|endoftext|>``)."""
        try:
            return self.model.tokenize(text)
        except UnicodeEncodeError:
            raise bad_request(f"{field} holds text that is not valid Unicode (a lone surrogate)", field) from None

    def checked_ids(self, ids: list[int], field: str) -> list[int]:
        """``ids``, each checked to be in the vocabulary (400 naming ``field`` otherwise)."""
        n_vocab = self.model.n_vocab
        for index, token_id in enumerate(ids):
            if not 0 <= token_id < n_vocab:
                raise bad_request(
                    f"{field}[{index}]: token id {token_id} is not in the vocabulary (0 to {n_vocab - 1})", field
                )
        return list(ids)


def unknown_model(name: str, served: str) -> ApiError:
    return ApiError(
        404, f"the model {name!r} does not exist; this server serves {served!r}", param="model", code="model_not_found"
    )
