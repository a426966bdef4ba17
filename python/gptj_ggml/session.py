"""``Session``: one conversation over a shared Model -- a KV cache and the tokens in it."""

from __future__ import annotations

import inspect
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _checks
from .chat import ChatTemplate, resolve_template
from .errors import SessionBusyError
from .generate_arguments import check_generate_arguments
from .generation import Completion, ContextPolicy, Generation
from .sampling import FIELDS, SamplingParams
from .speculation import PromptLookup

if TYPE_CHECKING:
    from . import _core
    from .decoding import Decoding
    from .model import Model

_DEFAULT = SamplingParams()


def _with_sampling_keywords(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` with ``**sampling_overrides`` spelled out as one keyword per sampling field."""
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    settings = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_DEFAULT.settings().get(name))
        for name in FIELDS  # logit_bias: None
    ]
    return signature.replace(parameters=kept + settings)


class Session:
    """A KV cache and its token history over a :class:`Model`'s shared weights.

    Make one with :meth:`Model.session`. Each call to :meth:`generate` takes the whole
    prompt and evaluates only what the cache does not already hold (the longest common
    prefix is reused), so a conversation that resends its transcript plus a new turn costs
    only the new turn. Sessions are independent: several can run at once in different
    threads. One session belongs to one thread at a time: using it from another thread while
    a call or an unfinished generation holds it raises :class:`SessionBusyError`.
    """

    def __init__(self, model: Model, core_session: _core.Session) -> None:
        self.model = model
        self._core = core_session
        self._lock = threading.RLock()
        # The unfinished generation holding the session (weak: dropping it frees the session).
        self._active: weakref.ref[Generation] | None = None
        self._active_decoding: Decoding | None = None
        self._active_thread: int | None = None

    # -- description ---------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        """Tokens the cache holds at most."""
        return self._core.n_ctx

    @property
    def n_past(self) -> int:
        """Tokens in the cache now."""
        return self._core.n_past

    @property
    def history(self) -> list[int]:
        """The tokens in the cache, in order (the last sampled token is not among them until it is evaluated)."""
        return self._core.history

    @property
    def n_threads(self) -> int:
        """The most threads an evaluation uses (settable: a count set here is used as it is).

        Left at its default (``n_threads=None``), a session uses up to the physical cores and
        fewer while other processes keep them busy: ggml's threads wait for each other at
        every step of the graph, and a thread that has no core to itself stalls the rest (a
        tiny model on 2 busy cores: 190 ms per token on 2 threads against 5 on 1). It tries
        more again every few seconds. Results do not depend on the thread count. Setting 0
        returns to that adaptive default.
        """
        return self._core.n_threads

    @property
    def n_threads_last_used(self) -> int:
        """Threads the latest evaluation used."""
        return self._core.n_threads_last_used

    @property
    def adaptive_threads(self) -> bool:
        """Whether the thread count adapts to how busy the cores are (no count was given)."""
        return self._core.adaptive_threads

    @n_threads.setter
    def n_threads(self, value: int) -> None:
        value = _checks.integer("n_threads", value, minimum=0, maximum=_checks.INT32_MAX)
        self._claim()
        self._core.n_threads = value

    @property
    def kv_cache_bytes(self) -> int:
        """Size of the KV cache's buffer (its pages are touched only as positions fill)."""
        return self._core.kv_cache_bytes

    @property
    def cache_type(self) -> str:
        """How the KV cache stores keys and values: ``"f16"``, ``"q8_0"`` or ``"q4_0"``."""
        return self._core.cache_type

    @property
    def flash_attn(self) -> bool:
        """Whether attention runs ggml's flash-attention kernel over untransposed values."""
        return self._core.flash_attention

    def __repr__(self) -> str:
        return f"<Session n_past={self.n_past}/{self.n_ctx}, n_threads={self.n_threads}, model={self.model.path!r}>"

    # -- evaluation ------------------------------------------------------------------
    def reset(self) -> None:
        """Empty the cache."""
        self._claim()
        self._core.truncate(0)

    def evaluate(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids`` to the cache and return the logits that follow them (float32, ``(n_vocab,)``).

        Raises:
            ContextFullError: the tokens do not fit (the cache is then unchanged).
            TypeError, ValueError: an id that is not an integer, or outside the vocabulary.
        """
        ids = _checks.token_ids("ids", ids, self.model.n_vocab)
        if not ids:
            raise ValueError("evaluate needs at least one token")
        self._claim()
        return self._core.evaluate(ids, False)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of ``ids``, evaluated from an empty context.

        Returns a float32 array of shape ``(len(ids), n_vocab)``: row ``i`` scores the token
        that follows ``ids[: i + 1]``. The cache then holds ``ids``.

        A long evaluation stops at Ctrl-C (``KeyboardInterrupt``, within a tenth of a second);
        the cache then holds the batches evaluated so far.
        """
        ids = _checks.token_ids("ids", ids, self.model.n_vocab)
        if not ids:
            return np.zeros((0, self.model.n_vocab), dtype=np.float32)
        self._claim()
        self._core.truncate(0)
        return self._core.evaluate(ids, True)

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        sampling: SamplingParams | None = None,
        max_tokens: int = 128,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        ignore_eos: bool = False,
        logprobs: bool = False,
        top_logprobs: int = 0,
        on_context_full: ContextPolicy = "error",
        n_keep: int = 0,
        is_cancelled: Callable[[], bool] | None = None,
        lookup: int | PromptLookup | None = None,
        **sampling_overrides: Any,
    ) -> Generation:
        """Yield the tokens that continue ``prompt``, one at a time, as they are produced.

        Args:
            prompt: text, or token ids; the whole context (the cache keeps what it shares with it).
            sampling: the sampler settings (default: ``SamplingParams()``).
            **sampling_overrides: any field of :class:`~gptj_ggml.SamplingParams` (``temperature``,
                ``top_k``, ``top_p``, ``min_p``, ``typical_p``, ``repeat_penalty``, ``repeat_last_n``,
                ``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ...), applied on top of
                ``sampling``. ``temperature=0`` is greedy.
            max_tokens: the most tokens to generate.
            seed: the random seed; the same seed gives the same tokens. Default: a fresh one
                (see ``Generation.seed``).
            stop: a string or strings that end the generation. No part of them is yielded:
                text that could start one is held back until it is decided.
            ignore_eos: never produce end-of-text (its logit is set to -inf); otherwise it ends
                the generation (and is not yielded).
            logprobs: also give each token's log-probability (``Token.logprob``).
            top_logprobs: also give that many of the most likely tokens at each step
                (``Token.top_logprobs``; implies ``logprobs``).
            on_context_full: when the cache is full: "error" raises :class:`ContextFullError`
                (after yielding what was generated), "stop" ends the generation, "shift" keeps
                the first ``n_keep`` tokens, drops the oldest half of the rest and goes on
                (re-evaluating what is kept, as GPT-J's rotary positions require).
            n_keep: tokens at the start that "shift" never drops.
            is_cancelled: called before every engine step (in the thread that iterates); when it
                returns True the generation ends there with ``finish_reason`` "cancelled", at most
                the step already running after the request. It lets another thread stop a
                generation (a server whose client went away), which ``close()`` cannot: only
                the iterating thread may close it. Text held back (a possible stop string)
                is dropped.
            lookup: prompt lookup speculative decoding: the most tokens to guess per step from
                earlier text (the tokens that followed the latest occurrence of the last few)
                and verify in one evaluation, or a :class:`~gptj_ggml.PromptLookup`; 0 or None:
                off. The tokens are those the sampler would have drawn one step at a time (greedy
                output is identical, a seed gives the same tokens, up to the float rounding of
                evaluating several tokens at once); quoting, editing or continuing given text
                gets faster, and drafting stops by itself where guesses fail.
                ``Generation.timings`` counts the drafted and accepted tokens.

        Returns:
            a :class:`Generation`: iterate it for :class:`Token` objects; afterwards its
            ``finish_reason``, ``timings`` and ``result()`` describe the whole run.

        Raises:
            ValueError: an argument out of range (a token id outside the vocabulary included), a
                prompt longer than the context, or a context too small to generate in.
            TypeError: an argument of the wrong type (a float for a count or a token id), or a
                keyword that is no argument and no sampling setting.
            SessionBusyError: another thread is using this session.
            KeyboardInterrupt: Ctrl-C while a long prompt is evaluated (the cache keeps the
                batches done; the generation is then "cancelled").
        """
        arguments = check_generate_arguments(
            self.model,
            self.n_ctx,
            prompt,
            sampling=sampling,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
            ignore_eos=ignore_eos,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            on_context_full=on_context_full,
            n_keep=n_keep,
            is_cancelled=is_cancelled,
            lookup=lookup,
            **sampling_overrides,
        )
        decoding = arguments.decoding(self._core, on_end=self._release)
        with self._lock:
            self._claim()
            generation = Generation(decoding)
            self._active = weakref.ref(generation)
            self._active_decoding = decoding
            self._active_thread = threading.get_ident()
        return generation

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        template: str | os.PathLike[str] | ChatTemplate | None = None,
        template_variables: Mapping[str, Any] | None = None,
        stop: str | Sequence[str] | None = None,
        **options: Any,
    ) -> Generation:
        """Stream the assistant's reply to a conversation, as :meth:`generate` streams a completion.

        Args:
            messages: the conversation so far: mappings with ``role`` (``system``, ``user`` or
                ``assistant``) and ``content``.
            template: a named template (``plain``, ``gpt4all-j``, ``dolly-v1``, ``alpaca``,
                ``pygmalion``), a template file, or a :class:`~gptj_ggml.chat.ChatTemplate`;
                default: the model's own (``Model.chat_template``).
            template_variables: more variables for the template (``{"char": "Aqua"}`` for Pygmalion).
            stop: stop strings besides the template's own.
            **options: the other arguments of :meth:`generate` (sampling, ``max_tokens``, ``seed``, ...).

        The rendered prompt is tokenized as plain text: a message holding ``<|endoftext|>``
        cannot end the context early. The session reuses what it holds of the conversation, so
        each turn evaluates only its new tokens.
        """
        chat_template = (
            template
            if isinstance(template, ChatTemplate)
            else (self.model.chat_template if template is None else resolve_template(template))
        )
        prompt = chat_template.render(messages, **dict(template_variables or {}))
        extra = [stop] if isinstance(stop, str) else list(stop or ())
        return self.generate(self.model.tokenize(prompt), stop=[*chat_template.stop, *extra], **options)

    def complete(self, prompt: str | Sequence[int], **options: Any) -> Completion:
        """Generate to the end and return the :class:`Completion` (text, tokens, finish
        reason, timings). Takes the arguments of :meth:`generate`."""
        return self.generate(prompt, **options).result()

    # help() and notebooks show every sampling setting as a keyword of its own.
    generate.__signature__ = _with_sampling_keywords(inspect.signature(generate))  # type: ignore[attr-defined]
    complete.__signature__ = generate.__signature__.replace(return_annotation=Completion)  # type: ignore[attr-defined]

    # -- ownership -------------------------------------------------------------------
    def _claim(self) -> None:
        """Take the session for the calling thread: its own unfinished generation is closed
        (superseded); another thread's raises SessionBusyError."""
        with self._lock:
            active = self._active() if self._active is not None else None
            if active is None or active.finish_reason is not None:
                self._release(self._active_decoding)
                return
            if self._active_thread != threading.get_ident():
                raise SessionBusyError(
                    "this Session is in use by an unfinished generation in another thread; "
                    "create one Session per thread (Model.session())"
                )
            active.close()  # its cleanup calls _release

    def _release(self, decoding: Decoding | None) -> None:
        with self._lock:
            if self._active_decoding is decoding:
                self._active = self._active_decoding = self._active_thread = None
