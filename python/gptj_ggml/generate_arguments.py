"""The arguments of ``generate``, checked once for every way of generating.

``Session.generate``, ``Model.generate_batch`` and the server's scheduler take the same options;
:func:`check_generate_arguments` turns them into :class:`GenerateArguments` (the prompt's ids, the
sampler settings, the :class:`~gptj_ggml.decoding.DecodingOptions`, the seed if one was given), or
raises the ``TypeError``/``ValueError`` that names the argument, before any engine call.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _checks
from .decoding import Decoding, DecodingOptions
from .sampling import SamplingParams, check_names
from .speculation import PromptLookup, lookup_options
from .stop import StopStrings

if TYPE_CHECKING:
    from . import _core
    from .generation import ContextPolicy
    from .model import Model

_DEFAULT = SamplingParams()


@dataclass(frozen=True)
class GenerateArguments:
    """One completion's checked request; :meth:`decoding` starts it on an engine session."""

    model: Model
    prompt: list[int]
    sampling: SamplingParams
    options: DecodingOptions
    #: The seed asked for (reduced to 64 bits); None: none was given.
    seed: int | None

    def decoding(
        self, session: _core.Session, seed: int | None = None, on_end: Callable[[Decoding], None] | None = None
    ) -> Decoding:
        """A :class:`Decoding` of this request on ``session``, sampling with ``seed`` (default:
        the seed asked for, else a fresh one).

        Raises:
            ValueError: a ``logit_bias`` id outside the vocabulary.
        """
        if seed is None:
            seed = secrets.randbits(64) if self.seed is None else self.seed
        sampler = self.sampling.sampler(self.model.n_vocab, seed)
        tokenizer = self.model.tokenizer
        return Decoding(session, sampler, tokenizer, self.prompt, self.options, seed, self.model.load_ms, on_end)


def check_generate_arguments(
    model: Model,
    n_ctx: int,
    prompt: str | Sequence[int],
    caller: str = "generate()",
    prompt_name: str = "prompt",
    /,
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
) -> GenerateArguments:
    """Check the arguments of ``Session.generate`` (see there) for a session of ``n_ctx`` tokens.

    ``caller`` names the function in the error for an unknown keyword, ``prompt_name`` the prompt
    in the errors about it (``prompts[2]`` for a batch). The first five are positional-only, so
    that a keyword of the same name is an unknown option, not one of them.
    """
    check_names(sampling_overrides, caller)
    if sampling is not None and not isinstance(sampling, SamplingParams):
        raise TypeError(f"sampling must be a SamplingParams, got {type(sampling).__name__}")
    params = (_DEFAULT if sampling is None else sampling).replace(**sampling_overrides)
    ids = prompt_ids(model, prompt, prompt_name)
    max_tokens = _checks.integer("max_tokens", max_tokens, minimum=0)
    top_logprobs = _checks.integer("top_logprobs", top_logprobs, minimum=0, maximum=model.n_vocab)
    n_keep = _checks.integer("n_keep", n_keep, minimum=0)
    if seed is not None:
        seed = _checks.integer("seed", seed) & (2**64 - 1)
    if on_context_full not in ("error", "stop", "shift"):
        raise ValueError(f"on_context_full must be 'error', 'stop' or 'shift', got {on_context_full!r}")
    # One position holds the prompt's last token; generating more needs a second.
    if n_ctx < 2:
        raise ValueError(f"the context is too small to generate: n_ctx={n_ctx}, at least 2 are needed")
    if len(ids) > n_ctx:
        raise ValueError(f"{_subject(prompt_name)} has {len(ids)} tokens, more than n_ctx={n_ctx}")
    if n_keep > n_ctx - 2:
        raise ValueError(f"n_keep must be in [0, n_ctx - 2 = {n_ctx - 2}], got {n_keep}")
    eos_id = model.tokenizer.eos_id
    # Without an end-of-text token there is nothing to ignore: the generation never ends on one.
    if ignore_eos and eos_id >= 0:
        params = params.replace(logit_bias={**params.logit_bias, eos_id: float("-inf")})
    options = DecodingOptions(
        max_tokens=max_tokens,
        stop=StopStrings(stop),
        logprobs=logprobs or top_logprobs > 0,
        top_logprobs=top_logprobs,
        on_context_full=on_context_full,
        n_keep=n_keep,
        is_cancelled=is_cancelled,
        lookup=lookup_options(lookup),
    )
    return GenerateArguments(model, ids, params, options, seed)


def prompt_ids(model: Model, prompt: str | Sequence[int], name: str = "prompt") -> list[int]:
    """The ids of a prompt given as text or ids; an empty one starts from beginning-of-text."""
    if isinstance(prompt, str):
        ids = model.tokenize(prompt)
    else:
        ids = _checks.token_ids(name, prompt, model.n_vocab)
    if not ids:
        bos_id = model.tokenizer.bos_id
        if bos_id < 0:
            raise ValueError(f"{_subject(name)} is empty and the model has no beginning-of-text token to start from")
        ids = [bos_id]  # as transformers' generate starts an empty prompt
    return ids


def _subject(prompt_name: str) -> str:
    # "the prompt has ..." for generate, "prompts[2] has ..." for one of a batch.
    return "the prompt" if prompt_name == "prompt" else prompt_name
