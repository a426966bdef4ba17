"""The GPT-2 byte-level BPE vocabulary of a Hugging Face tokenizer folder, as GGUF stores it.

Two sources give the same data: ``tokenizer.json`` (the fast tokenizer; preferred when
present because it flags each added token as special or not) or ``vocab.json`` +
``merges.txt`` (+ ``added_tokens.json``), where special tokens are those named in
``special_tokens_map.json`` / ``tokenizer_config.json``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from .hparams import MAX_DIMENSION, is_utf8_string
from .source_files import (
    MAX_TOKENIZER_BYTES,
    MAX_TOKENIZER_SIDE_FILE_BYTES,
    describe,
    display_name,
    folder_file,
    is_regular_file,
    read_json,
    read_text,
)

ENDOFTEXT = "<|endoftext|>"
_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
_SIDE_FILES = ("special_tokens_map.json", "tokenizer_config.json")


class TokenType(enum.IntEnum):
    """GGUF's ``tokenizer.ggml.token_type`` values (llama.cpp's llama_token_type)."""

    NORMAL = 1
    CONTROL = 3  # special tokens such as <|endoftext|>, never produced by the BPE
    USER_DEFINED = 4  # added tokens that are not special, such as <|extratoken_1|>
    UNUSED = 5  # padding up to the embedding's row count


#: The token types the engine accepts (csrc/gptj/tokenizer/vocab.h: undefined 0 .. byte 6).
_ENGINE_TOKEN_TYPES = range(7)


@dataclass
class TokenizerData:
    """A vocabulary ready for GGUF.

    ``tokens[i]`` is token ``i`` in GPT-2's byte-to-unicode form (as in vocab.json),
    padded with ``[PAD{i}]`` entries of type UNUSED up to the model's vocab_size;
    ``merges`` are "a b" strings in rank order; ``chat_template`` is the checkpoint's Jinja
    chat template (``tokenizer_config.json``), if it has one.
    """

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    chat_template: str | None = None

    def check(self, source: Path) -> None:
        """Refuse what the engine's vocabulary would refuse to load (csrc/gptj/tokenizer/vocab.cpp).

        Every token and merge a GGUF string (UTF-8, no NUL: the engine reads C strings); token
        types known; bos/eos ids inside the vocabulary; every merge two tokens joined by one
        space, where both tokens and their concatenation are in the vocabulary.
        """
        n_tokens = len(self.tokens)
        if not 0 < n_tokens <= MAX_DIMENSION:
            raise ConversionError(
                f"{source}: a vocabulary of {n_tokens} tokens (the engine takes 1 to {MAX_DIMENSION})"
            )
        if len(self.token_types) != n_tokens:
            raise ConversionError(f"{source}: {n_tokens} tokens but {len(self.token_types)} token types")
        for token_id, (token, token_type) in enumerate(zip(self.tokens, self.token_types)):
            if not is_utf8_string(token):
                raise ConversionError(f"{source}: token {token_id} ({describe(token)}) is not text the file can hold")
            if token_type not in _ENGINE_TOKEN_TYPES:
                raise ConversionError(f"{source}: token {token_id} has token type {describe(token_type)}, not 0..6")
        for role, token_id in (("bos", self.bos_id), ("eos", self.eos_id)):
            # The engine takes -1 for "none", but GGUF stores the ids as uint32: 0 .. n_tokens - 1.
            if not isinstance(token_id, int) or not 0 <= token_id < n_tokens:
                raise ConversionError(f"{source}: the {role} token id {describe(token_id)} is outside the vocabulary")
        known = set(self.tokens)
        for rank, merge in enumerate(self.merges):
            parts = merge.split(" ") if isinstance(merge, str) else []
            if len(parts) != 2 or not all(parts):
                raise ConversionError(
                    f"{source}: merge {rank} ({describe(merge)}) is not two tokens separated by a space"
                )
            for token in (parts[0], parts[1], parts[0] + parts[1]):
                if token not in known:
                    raise ConversionError(
                        f"{source}: merge {rank} ({display_name(merge)}) needs the token {display_name(token)}, "
                        "which is not in the vocabulary"
                    )
        if self.chat_template is not None and not is_utf8_string(self.chat_template):
            raise ConversionError(f"{source}: the chat template is not text the file can hold (a NUL character?)")


def read_tokenizer(folder: Path, n_vocab: int) -> TokenizerData:
    """Read the tokenizer in ``folder`` and pad it to ``n_vocab`` tokens (the embedding's rows).

    Raises :class:`ConversionError` naming the file and field at fault, or the rule of the
    engine's vocabulary that the data breaks (see :meth:`TokenizerData.check`).
    """
    folder = Path(folder)
    if not isinstance(n_vocab, int) or not 0 < n_vocab <= MAX_DIMENSION:
        raise ConversionError(
            f"{folder}: a vocabulary of {describe(n_vocab)} tokens (the engine takes 1 to {MAX_DIMENSION})"
        )
    tokenizer_json = folder_file(folder, "tokenizer.json")
    vocab_json, merges_txt = folder_file(folder, "vocab.json"), folder_file(folder, "merges.txt")
    if is_regular_file(tokenizer_json):
        vocab, merges, added, special = _from_tokenizer_json(tokenizer_json)
        source = added_source = tokenizer_json
    elif is_regular_file(vocab_json) and is_regular_file(merges_txt):
        vocab, merges, added, special = _from_vocab_and_merges(folder, vocab_json, merges_txt)
        source, added_source = vocab_json, folder_file(folder, "added_tokens.json")
    else:
        raise ConversionError(f"{folder}: no tokenizer found (expected tokenizer.json or vocab.json + merges.txt)")
    side_files = _side_files(folder)
    for path, data in side_files:
        special |= _special_tokens(path, data)

    by_id: dict[int, tuple[str, TokenType]] = {}
    for token, token_id in vocab.items():
        _place(by_id, token, token_id, TokenType.CONTROL if token in special else TokenType.NORMAL, source)
    for token, token_id in added.items():
        token_type = TokenType.CONTROL if token in special else TokenType.USER_DEFINED
        _check_id(token, token_id, added_source)
        if token_id in by_id and by_id[token_id][0] == token:
            del by_id[token_id]  # an added token may repeat a vocabulary entry (<|endoftext|> does)
        _place(by_id, token, token_id, token_type, added_source)
    outside = [token_id for token_id in by_id if not 0 <= token_id < n_vocab]
    if outside:
        worst = max(outside) if max(outside) >= n_vocab else min(outside)
        raise ConversionError(
            f"{source}: token id {describe(worst)} ({display_name(by_id[worst][0])}) "
            f"does not fit the model's vocab_size {n_vocab}"
        )

    tokens, token_types = [], []
    for token_id in range(n_vocab):
        token, token_type = by_id.get(token_id, (f"[PAD{token_id}]", TokenType.UNUSED))
        tokens.append(token)
        token_types.append(int(token_type))
    ids: dict[str, int] = {}
    for token_id, token in enumerate(tokens):
        ids.setdefault(token, token_id)  # the engine, too, takes the first id of a repeated string
    bos_token, eos_token = _bos_eos_tokens(side_files)
    data = TokenizerData(
        tokens=tokens,
        token_types=token_types,
        merges=merges,
        bos_id=_token_id(ids, bos_token, "bos", folder),
        eos_id=_token_id(ids, eos_token, "eos", folder),
        chat_template=_chat_template(side_files),
    )
    data.check(source)
    return data


def _place(
    by_id: dict[int, tuple[str, TokenType]], token: str, token_id: Any, token_type: TokenType, source: Path
) -> None:
    _check_id(token, token_id, source)
    if token_id in by_id:
        raise ConversionError(
            f"{source}: token id {token_id} is given to both {display_name(by_id[token_id][0])} and {display_name(token)}"
        )
    by_id[token_id] = (token, token_type)


def _check_id(token: str, token_id: Any, source: Path) -> None:
    if not isinstance(token_id, int) or isinstance(token_id, bool):
        raise ConversionError(f"{source}: token {display_name(token)} has id {describe(token_id)}, not an integer")


def _side_files(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """special_tokens_map.json and tokenizer_config.json, those present, as JSON objects."""
    files = []
    for file_name in _SIDE_FILES:
        path = folder_file(folder, file_name)
        if not is_regular_file(path):
            continue
        data = read_json(path, MAX_TOKENIZER_SIDE_FILE_BYTES, file_name)
        if not isinstance(data, dict):
            raise ConversionError(f"{path}: holds {describe(data)}, expected a JSON object")
        files.append((path, data))
    return files


def _chat_template(side_files: list[tuple[Path, dict[str, Any]]]) -> str | None:
    for path, data in side_files:
        if path.name != "tokenizer_config.json":
            continue
        template = data.get("chat_template")
        if isinstance(template, list):
            # Newer checkpoints keep several, by name ({"name", "template"}): the default one is the chat template.
            by_name = {
                entry.get("name"): entry.get("template")
                for entry in template
                if isinstance(entry, dict) and isinstance(entry.get("name"), str)
            }
            template = by_name.get("default")
        if template is not None and not isinstance(template, str):
            raise ConversionError(
                f"{path}: chat_template must be a string (Jinja source), got {type(template).__name__}"
            )
        return template or None
    return None


def _from_tokenizer_json(path: Path) -> tuple[dict[str, int], list[str], dict[str, int], set[str]]:
    data = read_json(path, MAX_TOKENIZER_BYTES, "tokenizer.json")
    model = data.get("model") if isinstance(data, dict) else None
    if (
        not isinstance(model, dict)
        or model.get("type") not in (None, "BPE")
        or "vocab" not in model
        or "merges" not in model
    ):
        raise ConversionError(f"{path}: not a BPE tokenizer (model.vocab / model.merges missing)")
    vocab = _token_ids(model["vocab"], path, "model.vocab")
    merges = _merges(model["merges"], path)
    entries = data.get("added_tokens", [])
    if not isinstance(entries, list):
        raise ConversionError(f"{path}: added_tokens is {describe(entries)}, expected a list")
    added: dict[str, int] = {}
    special: set[str] = set()
    for index, entry in enumerate(entries):
        content = entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(content, str) or "id" not in entry:
            raise ConversionError(f"{path}: added_tokens[{index}] is not an object with a string content and an id")
        if content in added:
            raise ConversionError(f"{path}: added token {display_name(content)} is listed twice")
        added[content] = entry["id"]
        if entry.get("special") is True:
            special.add(content)
    return vocab, merges, added, special


def _merges(entries: Any, path: Path) -> list[str]:
    # Merges are "a b" strings, or [a, b] pairs in tokenizers >= 0.20; GGUF stores "a b".
    if not isinstance(entries, list):
        raise ConversionError(f"{path}: model.merges is {describe(entries)}, expected a list")
    merges = []
    for rank, merge in enumerate(entries):
        if isinstance(merge, list) and len(merge) == 2 and all(isinstance(part, str) for part in merge):
            if any(" " in part for part in merge):
                raise ConversionError(
                    f'{path}: merge {rank} {describe(merge)} has a token with a space, which GGUF\'s "a b" form cannot hold'
                )
            merge = " ".join(merge)
        if not isinstance(merge, str):
            raise ConversionError(f'{path}: merge {rank} is {describe(merge)}, expected "a b" or [a, b]')
        merges.append(merge)
    return merges


def _token_ids(value: Any, path: Path, field: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ConversionError(f"{path}: {field} is {describe(value)}, expected an object of token: id")
    return value


def _from_vocab_and_merges(
    folder: Path, vocab_path: Path, merges_path: Path
) -> tuple[dict[str, int], list[str], dict[str, int], set[str]]:
    vocab = _token_ids(read_json(vocab_path, MAX_TOKENIZER_BYTES, "vocab.json"), vocab_path, "the file")
    # Lines end at "\n" only, as tokenizers reads the file (str.splitlines would also split at
    # U+2028 and other characters a token may hold).
    lines = read_text(merges_path, MAX_TOKENIZER_BYTES, "merges.txt").split("\n")
    merges = [line.removesuffix("\r") for line in lines if line.removesuffix("\r") and not line.startswith("#version")]
    added_path = folder_file(folder, "added_tokens.json")
    added: dict[str, int] = {}
    if is_regular_file(added_path):
        added = _token_ids(
            read_json(added_path, MAX_TOKENIZER_SIDE_FILE_BYTES, "added_tokens.json"), added_path, "the file"
        )
    return vocab, merges, added, set()


def _special_tokens(path: Path, data: dict[str, Any]) -> set[str]:
    special: set[str] = set()
    for key in _SPECIAL_TOKEN_KEYS:
        if (token := _token_content(data.get(key))) is not None:
            special.add(token)
    entries = data.get("additional_special_tokens", [])
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise ConversionError(f"{path}: additional_special_tokens is {describe(entries)}, expected a list")
    for entry in entries:
        if (token := _token_content(entry)) is not None:
            special.add(token)
    decoder = data.get("added_tokens_decoder", {})
    decoder = {} if decoder is None else decoder
    if not isinstance(decoder, dict):
        raise ConversionError(f"{path}: added_tokens_decoder is {describe(decoder)}, expected an object")
    for key, entry in decoder.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise ConversionError(f"{path}: added_tokens_decoder[{display_name(key)}] has no string content")
        if entry.get("special") is True:
            special.add(entry["content"])
    return special


def _bos_eos_tokens(side_files: list[tuple[Path, dict[str, Any]]]) -> tuple[str, str]:
    bos = eos = None
    for _, data in side_files:
        bos = bos or _token_content(data.get("bos_token"))
        eos = eos or _token_content(data.get("eos_token"))
    return bos or ENDOFTEXT, eos or ENDOFTEXT


def _token_content(value: Any) -> str | None:
    # Hugging Face writes special tokens either as a plain string or as an AddedToken dict.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _token_id(ids: dict[str, int], token: str, role: str, folder: Path) -> int:
    if token not in ids:
        raise ConversionError(f"{folder}: the {role} token {display_name(token)} is not in the vocabulary")
    return ids[token]
