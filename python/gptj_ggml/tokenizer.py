"""GPT-J's tokenizer: GPT-2's byte-level BPE, exactly as Hugging Face ``tokenizers`` encodes.

The work happens in C++ (``_core.Vocab``); this module owns the Python-facing names: text in and
out as ``str``, and :class:`StreamDecoder`, which turns generated tokens into text without ever
splitting a UTF-8 character.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import _core

#: GPT-J's embedding has 50400 rows: GPT-2's 50257 tokens and 143 ``<|extratoken_N|>``.
GPTJ_N_VOCAB = 50400


class Tokenizer:
    """Encodes text to GPT-J token ids and decodes ids back to text."""

    def __init__(self, vocab: _core.Vocab) -> None:
        self._vocab = vocab

    @classmethod
    def from_data(
        cls, tokens: list[str], token_types: list[int], merges: list[str], bos_id: int, eos_id: int
    ) -> Tokenizer:
        """Build from vocabulary data as GGUF stores it (``tokenizer.ggml.*``).

        ``tokens`` are in GPT-2's byte-to-unicode alphabet, ``token_types`` GGUF's numbering (empty:
        all normal), ``merges`` "left right" strings by rank; with no merges they are derived from
        the ids, as GPT-2's ids follow its merge order (legacy GGML files carry no merges).
        """
        from . import _checks
        from ._native import core  # loads the extension and the ggml libraries it links

        bos_id = _checks.integer("bos_id", bos_id, minimum=-1, maximum=_checks.INT32_MAX)
        eos_id = _checks.integer("eos_id", eos_id, minimum=-1, maximum=_checks.INT32_MAX)
        token_types = [
            _checks.integer(f"token_types[{i}]", t, minimum=-(2**31), maximum=_checks.INT32_MAX)
            for i, t in enumerate(token_types)
        ]
        return cls(core.Vocab(tokens, token_types, merges, bos_id, eos_id))

    @classmethod
    def from_folder(cls, path: str | PathLike[str], n_vocab: int = GPTJ_N_VOCAB) -> Tokenizer:
        """Build from a Hugging Face tokenizer folder (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``).

        ``n_vocab`` is the model's embedding row count; ids past the tokenizer's own are padding.
        """
        from .convert.tokenizer_data import read_tokenizer

        data = read_tokenizer(Path(path), n_vocab)
        return cls.from_data(data.tokens, data.token_types, data.merges, data.bos_id, data.eos_id)

    def encode(self, text: str | bytes, special: bool = False) -> list[int]:
        """Token ids of ``text`` (a ``str``, or ``bytes`` taken as UTF-8; invalid bytes are kept).

        With ``special=True`` the strings of added tokens (``<|endoftext|>``, ``<|extratoken_N|>``)
        become their ids, as ``tokenizers`` does by default; with ``special=False`` they are plain
        text, so user content cannot inject them. A ``str`` with lone surrogates has no UTF-8 form
        and raises ``UnicodeEncodeError``.
        """
        return self._vocab.encode(text, special)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of ``ids`` (a token can hold part of a UTF-8 character)."""
        return self._vocab.decode(list(ids))

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token."""
        return self._vocab.token_bytes(token_id)

    def token_type(self, token_id: int) -> int:
        """GGUF's token type of one token (1 normal, 3 control, 4 user-defined, 5 unused, ...)."""
        return self._vocab.token_type(token_id)

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for tokens that arrive one at a time."""
        return StreamDecoder(self)

    @property
    def n_tokens(self) -> int:
        return self._vocab.n_tokens

    @property
    def bos_id(self) -> int:
        return self._vocab.bos_id

    @property
    def eos_id(self) -> int:
        return self._vocab.eos_id

    @property
    def vocab(self) -> _core.Vocab:
        """The C++ vocabulary, for the engine."""
        return self._vocab


class StreamDecoder:
    """Turns token ids, fed one at a time, into text that never splits a UTF-8 character.

    Bytes of an incomplete character are held back until a later token completes it. The texts
    returned by :meth:`feed` and then :meth:`flush` concatenate to ``tokenizer.decode(all ids)``.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._token_bytes = tokenizer.token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """The text that the bytes so far complete (possibly empty)."""
        return self._decoder.decode(self._token_bytes(token_id))

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished character are held back."""
        return bool(self._decoder.getstate()[0])

    def flush(self) -> str:
        """The end of the stream: held-back bytes of an unfinished character become U+FFFD."""
        return self._decoder.decode(b"", final=True)
