"""``Model``: load a GPT-J GGUF file; tokenize, evaluate and generate on its own Session."""

from __future__ import annotations

import functools
import inspect
import os
import re
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _checks
from ._native import core
from .batch import BatchGeneration, generate_batch
from .chat import ChatTemplate, resolve_template
from .generation import Completion, Generation, Token  # noqa: F401 - Token: re-exported
from .session import Session
from .tokenizer import Tokenizer

# "owner/name" as the Hugging Face Hub spells a model id (EleutherAI/gpt-j-6b).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _check_model_path(path: str | os.PathLike[str]) -> None:
    """Raise FileNotFoundError with advice for the paths new users pass instead of a GGUF file.

    The engine only says "not a regular file" or "cannot open"; a checkpoint folder needs
    converting, and a Hub id needs downloading first, which gptj_ggml does not do.
    """
    text, file = os.fspath(path), Path(path)
    if file.is_dir():
        if (file / "config.json").is_file():
            name = file.name or file.resolve().name  # "." has no name of its own
            command = shlex.join(["gptj-ggml", "convert", str(file), "-o", str(file.parent / f"{name}.gguf")])
            raise FileNotFoundError(
                f"{text}: a Hugging Face checkpoint folder, not a GGUF file; convert it first: {command}"
            )
        ggufs = sorted(child.name for child in file.glob("*.gguf"))
        holds = f" (it holds {', '.join(ggufs[:3])}{', ...' if len(ggufs) > 3 else ''})" if ggufs else ""
        raise FileNotFoundError(f"{text}: a folder, not a GGUF model file; pass the .gguf file itself{holds}")
    looks_like_hub_id = _HUB_ID.fullmatch(text) is not None and not text.endswith((".gguf", ".bin"))
    if not file.exists() and looks_like_hub_id and not file.parent.exists():
        name = file.name
        raise FileNotFoundError(
            f"{text}: not a local file, and gptj_ggml does not download models; to get a GGUF, download the "
            f"checkpoint (hf download {text} --local-dir {name}), then convert it: "
            f"gptj-ggml convert {name} -o {name}.gguf"
        )


def _batch_signature(generate: Any, returns: Any) -> inspect.Signature:
    """``Session.generate``'s signature with ``prompts`` and ``n`` for its prompt: the batch's options."""
    parameters = list(inspect.signature(generate).parameters.values())
    prompts = inspect.Parameter("prompts", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    n = inspect.Parameter("n", inspect.Parameter.KEYWORD_ONLY, default=1)
    return inspect.Signature([parameters[0], prompts, n, *parameters[2:]], return_annotation=returns)


class Model:
    """A GPT-J model loaded from a GGUF file (see ``gptj-ggml convert``).

    The weights are memory-mapped, not copied: opening a model whose file is in the page
    cache takes milliseconds, and several processes share one copy.

    The model has a session of its own, which :meth:`generate`, :meth:`complete` and
    :meth:`logits` use, made on their first call (a program that only makes its own sessions,
    such as a server with one per slot, pays for no hidden KV cache); :meth:`session` makes
    more, sharing the same weights (one per conversation or per thread).

    Args:
        path: the ``.gguf`` file.
        n_ctx: the most tokens (prompt + generated) a session holds at once; default: the
            model's training context (2048 for GPT-J-6B).
        n_threads: threads for evaluation; default: the number of physical cores.
        n_batch: prompt tokens evaluated per step.
        repack: copy the quantized matrices ggml can interleave into that layout at load
            where ggml's single-token kernels for it are the faster (q4_K on AVX2 CPUs without
            AVX-512, iq4_nl; q4_0 and q4_K on AVX-512 CPUs without VNNI); where our 8-bit
            kernels run, q8_0, q4_0 and q4_K stay in the file's layout (``core.keeps_file_layout``).
            Prompt batches still read the file's copy; the other weights stay memory-mapped.
            ``False`` keeps every weight mapped: the fastest load, slower tokens for those types.
        cache_type: how sessions store attention keys and values: ``"f16"`` (the default),
            ``"q8_0"`` or ``"q4_0"`` (about 1/2 or 1/4 of the memory, and of the bytes each
            generated token reads at long contexts, for a small change of the logits; see
            the README's accuracy table). Quantized types need ``flash_attn``.
        flash_attn: flash attention (online softmax, the values stored untransposed: ggml's
            kernel for prompt batches, ours for single tokens on AVX2 CPUs) instead of two
            matrix products; ``None``: on exactly when ``cache_type`` is quantized. With an f16
            cache it is the faster at long contexts (README, "KV cache types").
        mmap: keep the weights memory-mapped from the file (the default: opening takes
            milliseconds and the page cache is the only copy; the mapping asks for 2 MiB
            pages, which makes it as fast as a copy when the file enters the page cache
            through it). ``False`` copies them into memory of the process's own, on huge
            pages where the system allows: loading reads the whole file, but tokens stay fast
            when the page cache holds the file in small pages (a file written 4 KiB at a
            time, or re-read after eviction under memory pressure).

    Raises:
        FileNotFoundError: the file does not exist.
        ModelFormatError: the file is not a valid GPT-J GGUF file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int = 512,
        repack: bool = True,
        mmap: bool = True,
        cache_type: str = "f16",
        flash_attn: bool | None = None,
    ) -> None:
        # Checked before the file is read (a bad argument costs no load), not when the first
        # session is made.
        self._defaults = (
            None if n_ctx is None else _checks.positive("n_ctx", n_ctx),
            None if n_threads is None else _checks.positive("n_threads", n_threads),
            _checks.positive("n_batch", n_batch),
        )
        self._cache_layout = _checks.cache_layout(cache_type, flash_attn)
        _check_model_path(path)
        self.path = os.fspath(path)
        started = time.perf_counter()
        self._model = core.Model(self.path, repack, self._defaults[1] or 0, mmap)
        #: Milliseconds spent opening, validating and mapping the file.
        self.load_ms = (time.perf_counter() - started) * 1e3
        #: The model's tokenizer (GPT-2 byte-level BPE from the GGUF file).
        self.tokenizer = Tokenizer(self._model.vocab)
        self._own_session: Session | None = None
        self._own_session_lock = threading.Lock()

    def session(
        self,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
        cache_type: str | None = None,
        flash_attn: bool | None = None,
    ) -> Session:
        """A new :class:`Session` (its own KV cache and history) over these weights.

        Arguments left out take the values the Model was opened with; given sizes must be
        positive integers (0 is refused, as by the Model: it is no size). ``cache_type`` and
        ``flash_attn`` are as for the Model; giving ``cache_type`` alone resolves ``flash_attn``
        for it afresh.
        """
        default_ctx, default_threads, default_batch = self._defaults
        if cache_type is None and flash_attn is None:
            layout = self._cache_layout
        else:
            layout = _checks.cache_layout(self._cache_layout[0] if cache_type is None else cache_type, flash_attn)
        core_session = core.Session(
            self._model,
            (default_ctx or 0) if n_ctx is None else _checks.positive("n_ctx", n_ctx),
            (default_threads or 0) if n_threads is None else _checks.positive("n_threads", n_threads),
            default_batch if n_batch is None else _checks.positive("n_batch", n_batch),
            *layout,
        )
        return Session(self, core_session)

    def _batch_evaluator(self, n_threads: int | None = None) -> core.BatchEvaluator:
        """An evaluator of several sessions' tokens in one graph, with the Model's n_batch and
        ``n_threads`` (default: the Model's; neither: adaptive)."""
        _, default_threads, n_batch = self._defaults
        threads = default_threads if n_threads is None else _checks.positive("n_threads", n_threads)
        return core.BatchEvaluator(self._model, threads or 0, n_batch)

    @property
    def _session(self) -> Session:
        """The model's own session, made on first use."""
        with self._own_session_lock:
            if self._own_session is None:
                self._own_session = self.session()
            return self._own_session

    # -- description ---------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        """Rows of the embedding (50400 for GPT-J-6B)."""
        return self._model.n_vocab

    @property
    def n_ctx(self) -> int:
        """Tokens a session holds unless told otherwise (the model's training context by default)."""
        return self._defaults[0] or self._model.n_ctx_train

    @property
    def cache_type(self) -> str:
        """The KV cache type sessions get unless told otherwise (``"f16"``, ``"q8_0"``, ``"q4_0"``)."""
        return self._cache_layout[0]

    @property
    def flash_attn(self) -> bool:
        """Whether sessions attend by ggml's flash-attention kernel unless told otherwise."""
        return self._cache_layout[1]

    @property
    def n_embd(self) -> int:
        """Width of the hidden state (4096 for GPT-J-6B)."""
        return self._model.n_embd

    @property
    def n_layer(self) -> int:
        """Number of transformer blocks (28 for GPT-J-6B)."""
        return self._model.n_layer

    @property
    def n_threads(self) -> int:
        """Threads the model's own session uses; setting it also sets the default of later sessions."""
        if self._own_session is not None:
            return self._own_session.n_threads
        return self._defaults[1] or core.physical_core_count()

    @n_threads.setter
    def n_threads(self, value: int) -> None:
        value = _checks.positive("n_threads", value)
        n_ctx, _, n_batch = self._defaults
        self._defaults = (n_ctx, value, n_batch)
        if self._own_session is not None:
            self._own_session.n_threads = value

    @property
    def repacked_bytes(self) -> int:
        """Bytes of weights copied into ggml's faster interleaved layout at load (0: all mapped)."""
        return self._model.repacked_bytes

    @property
    def metadata(self) -> dict[str, Any]:
        """The GGUF file's scalar key/values (architecture, hyper-parameters, name, ...)."""
        return self._model.metadata()

    def __repr__(self) -> str:
        return (
            f"Model({self.path!r}, architecture=gptj, n_layer={self.n_layer}, n_embd={self.n_embd}, "
            f"params={self._model.n_params / 1e9:.2f}B, type={self._model.weight_type}, "
            f"size={self._model.weight_bytes / 2**30:.2f} GiB, n_ctx={self.n_ctx})"
        )

    # -- tokens ----------------------------------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of ``text`` (GPT-2 byte-level BPE, as Hugging Face's tokenizer).

        With ``special=True`` the text of special and added tokens (``<|endoftext|>``)
        maps to their ids; by default it is tokenized as plain text.
        """
        return self.tokenizer.encode(text, special)

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` (invalid UTF-8, e.g. half a character, becomes U+FFFD)."""
        return self.tokenizer.decode(ids)

    # -- evaluation (on the model's own session) -----------------------------------
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of ``ids``, evaluated from an empty context.

        Returns a float32 array of shape ``(len(ids), n_vocab)``: row ``i`` scores the
        token that follows ``ids[: i + 1]``. Ctrl-C stops a long call (``KeyboardInterrupt``).

        Raises:
            TypeError: an id that is not an integer.
            ValueError: an id outside the vocabulary.
        """
        return self._session.logits(ids)

    def generate(self, prompt: str | Sequence[int], **options: Any) -> Generation:
        """Stream tokens that continue ``prompt`` on the model's own session.

        Takes the arguments of :meth:`Session.generate` (sampling, ``stop``, ``seed``, ...):

        >>> for token in model.generate("The meaning of life is", max_tokens=32, stop=["\\n"]):
        ...     print(token.text, end="", flush=True)
        """
        return self._session.generate(prompt, **options)

    def chat(self, messages: Sequence[Mapping[str, Any]], **options: Any) -> Generation:
        """Stream the reply to a conversation on the model's own session; takes the arguments of
        :meth:`Session.chat` (``template``, sampling, ``max_tokens``, ...):

        >>> for token in model.chat([{"role": "user", "content": "What is GPT-J?"}], max_tokens=64):
        ...     print(token.text, end="", flush=True)
        """
        return self._session.chat(messages, **options)

    @functools.cached_property
    def chat_template(self) -> ChatTemplate:
        """The template :meth:`chat` uses unless told otherwise: the file's ``tokenizer.chat_template``
        (with a named template's stop strings when it is one), else the plain User:/Assistant: one."""
        return resolve_template(None, self.metadata)

    def complete(self, prompt: str | Sequence[int], **options: Any) -> Completion:
        """Generate to the end on the model's own session; return the :class:`Completion`
        (text, tokens, finish reason, timings). Takes the arguments of :meth:`Session.generate`."""
        return self._session.complete(prompt, **options)

    # -- several completions together ---------------------------------------------------
    def generate_batch(
        self, prompts: str | Sequence[str | Sequence[int]], *, n: int = 1, **options: Any
    ) -> BatchGeneration:
        """Stream ``n`` completions of each prompt, decoded together (one engine call per step).

        Decoding is bound by reading the weights, so several sequences in one step cost little
        more than one: the batch's tokens per second grow with its size, each completion's
        tokens come a little slower than alone.

        >>> batch = model.generate_batch(["The sky is", "Water is"], n=2, max_tokens=16, seed=1)
        >>> for index, token in batch:        # index: which completion (prompt index // n ... see below)
        ...     print(index, token.text)
        >>> [c.text for c in batch.result()]  # 4 completions: prompt 0's two, then prompt 1's two

        Args:
            prompts: a list of prompts, each text or token ids (one text alone is one prompt).
            n: completions per prompt. Completion ``index`` continues prompt ``index // n``
                (``batch[index].prompt_index``), as the choices of OpenAI's ``n``.
            **options: the arguments of :meth:`Session.generate` (sampling, ``max_tokens``,
                ``stop``, ``logprobs``, ``on_context_full``, ``is_cancelled``, ...), the same for
                every completion, each applied to it alone.

        Each completion has its own KV cache (a session of ``n_ctx`` tokens, made for the batch),
        its own sampler and its own seed: with ``seed=s``, completion ``i`` uses ``s + i`` (so it
        gives the tokens ``generate(prompt, seed=s + i)`` gives alone); without, each gets a
        fresh one (``batch[i].seed``). A prompt shared by several completions is evaluated once
        and its cache copied (their ``timings.reused_tokens`` count the copied tokens).

        Returns:
            a :class:`~gptj_ggml.batch.BatchGeneration`: iterate it for ``(index, Token)`` pairs;
            ``batch[index]`` gives that completion's ``text``, ``tokens``, ``finish_reason``,
            ``timings`` and ``seed``; ``result()`` every :class:`Completion`.

        Raises:
            ValueError, TypeError: as :meth:`Session.generate` (an error about a prompt names it,
                ``prompts[2]``), an empty ``prompts`` or ``n < 1``.
        """
        return generate_batch(self, prompts, n, **options)

    def complete_batch(
        self, prompts: str | Sequence[str | Sequence[int]], *, n: int = 1, **options: Any
    ) -> list[Completion]:
        """Generate ``n`` completions of each prompt together, to the end (see :meth:`generate_batch`);
        return every :class:`Completion`, prompt 0's ``n`` first."""
        return self.generate_batch(prompts, n=n, **options).result()

    # Notebooks and help() show the full list of options.
    generate.__signature__ = inspect.signature(Session.generate)  # type: ignore[attr-defined]
    complete.__signature__ = inspect.signature(Session.complete)  # type: ignore[attr-defined]
    generate_batch.__signature__ = _batch_signature(Session.generate, BatchGeneration)  # type: ignore[attr-defined]
    complete_batch.__signature__ = _batch_signature(Session.generate, list[Completion])  # type: ignore[attr-defined]
