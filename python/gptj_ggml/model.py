"""``Model``: load a GPT-J GGUF file, tokenize, evaluate and generate."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._native import core
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class Token:
    """One generated token: its id and the text it completes.

    ``text`` never splits a UTF-8 character: the bytes of a character spread over several
    tokens appear with the token that completes it, so joining every ``text`` gives the
    decoded output.
    """

    id: int
    text: str


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Model:
    """A GPT-J model loaded from a GGUF file (see ``gptj-ggml convert``).

    The weights are memory-mapped, not copied: opening a model whose file is in the page
    cache takes milliseconds, and several processes share one copy.

    Args:
        path: the ``.gguf`` file.
        n_ctx: the most tokens (prompt + generated) held at once; default: the model's
            training context (2048 for GPT-J-6B).
        n_threads: threads for evaluation; default: the number of physical cores.
        n_batch: prompt tokens evaluated per step.

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
    ) -> None:
        self.path = os.fspath(path)
        self._model = core.Model(self.path)
        self._session = core.Session(self._model, n_ctx or 0, n_threads or 0, n_batch)
        #: The model's tokenizer (GPT-2 byte-level BPE from the GGUF file).
        self.tokenizer = Tokenizer(self._model.vocab)

    # -- description ---------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        """Rows of the embedding (50400 for GPT-J-6B)."""
        return self._model.n_vocab

    @property
    def n_ctx(self) -> int:
        """Tokens the context holds."""
        return self._session.n_ctx

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
        """Threads used for evaluation (settable)."""
        return self._session.n_threads

    @n_threads.setter
    def n_threads(self, value: int) -> None:
        self._session.n_threads = value

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

    # -- evaluation ------------------------------------------------------------------
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of ``ids``, evaluated from an empty context.

        Returns a float32 array of shape ``(len(ids), n_vocab)``: row ``i`` scores the
        token that follows ``ids[: i + 1]``.
        """
        ids = list(ids)
        if not ids:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        self._session.truncate(0)
        return self._session.evaluate(ids, True)

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Iterator[Token]:
        """Yield tokens that continue ``prompt``, one at a time, as they are produced.

        Args:
            prompt: text, or token ids.
            max_tokens: the most tokens to generate.
            temperature: 0 picks the most likely token (greedy); higher values sample
                from softmax(logits / temperature).
            seed: the random seed for sampling; the same seed gives the same tokens.

        Generation stops after ``max_tokens``, at end-of-text (not yielded) or when the
        context is full. The tokens a previous call left in the context are reused when
        the new prompt starts with them.
        """
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        if not ids:
            ids = [self.tokenizer.bos_id]  # as transformers' generate starts an empty prompt
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if len(ids) > self.n_ctx:
            raise ValueError(f"the prompt has {len(ids)} tokens, more than n_ctx={self.n_ctx}")
        return self._generate(ids, max_tokens, float(temperature), seed)

    def _generate(self, ids: list[int], max_tokens: int, temperature: float, seed: int | None) -> Iterator[Token]:
        session = self._session
        # Reuse the cached prefix, but evaluate at least one token to get fresh logits.
        n_keep = min(_common_prefix_length(session.history, ids), len(ids) - 1)
        session.truncate(n_keep)
        pending = ids[n_keep:]
        sampler = core.Sampler(secrets.randbits(64) if seed is None else seed & (2**64 - 1))
        decoder = self.tokenizer.stream_decoder()
        eos_id = self.tokenizer.eos_id
        for n_generated in range(1, max_tokens + 1):
            expected_past = session.n_past + len(pending)
            token_id = session.evaluate_and_sample(pending, sampler, temperature)
            if session.n_past != expected_past:
                raise RuntimeError("the model was used by another call while this generator was running")
            if token_id == eos_id:
                # A character left unfinished by the previous token is shown as U+FFFD,
                # carried by the end-of-text token (otherwise never yielded).
                tail = decoder.flush()
                if tail:
                    yield Token(token_id, tail)
                return
            # The last token (max_tokens, or no room to evaluate it) flushes the decoder.
            last = n_generated == max_tokens or session.n_past + 1 > session.n_ctx
            text = decoder.feed(token_id)
            yield Token(token_id, text + decoder.flush() if last else text)
            if last:
                return
            pending = [token_id]
