"""The GPT-2 byte-level BPE vocabulary of a Hugging Face tokenizer folder, as GGUF stores it.

Two sources give the same data: ``tokenizer.json`` (the fast tokenizer; preferred when
present because it flags each added token as special or not) or ``vocab.json`` +
``merges.txt`` (+ ``added_tokens.json``), where special tokens are those named in
``special_tokens_map.json`` / ``tokenizer_config.json``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError

ENDOFTEXT = "<|endoftext|>"


class TokenType(enum.IntEnum):
    """GGUF's ``tokenizer.ggml.token_type`` values (llama.cpp's llama_token_type)."""

    NORMAL = 1
    CONTROL = 3  # special tokens such as <|endoftext|>, never produced by the BPE
    USER_DEFINED = 4  # added tokens that are not special, such as <|extratoken_1|>
    UNUSED = 5  # padding up to the embedding's row count


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


def read_tokenizer(folder: Path, n_vocab: int) -> TokenizerData:
    """Read the tokenizer in ``folder`` and pad it to ``n_vocab`` tokens (the embedding's rows)."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        vocab, merges, added, special = _from_tokenizer_json(folder / "tokenizer.json")
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab, merges, added, special = _from_vocab_and_merges(folder)
    else:
        raise ConversionError(f"{folder}: no tokenizer found (expected tokenizer.json or vocab.json + merges.txt)")
    special |= _special_tokens_from_maps(folder)

    by_id: dict[int, tuple[str, TokenType]] = {}
    for token, token_id in vocab.items():
        by_id[token_id] = (token, TokenType.CONTROL if token in special else TokenType.NORMAL)
    for token, token_id in added.items():
        by_id[token_id] = (token, TokenType.CONTROL if token in special else TokenType.USER_DEFINED)
    too_large = [token_id for token_id in by_id if not 0 <= token_id < n_vocab]
    if too_large:
        raise ConversionError(
            f"{folder}: token id {max(too_large)} does not fit the model's vocab_size {n_vocab}"
        )

    tokens, token_types = [], []
    for token_id in range(n_vocab):
        token, token_type = by_id.get(token_id, (f"[PAD{token_id}]", TokenType.UNUSED))
        tokens.append(token)
        token_types.append(int(token_type))
    ids = {token: token_id for token_id, token in enumerate(tokens)}
    bos_token, eos_token = _bos_eos_tokens(folder)
    return TokenizerData(
        tokens=tokens,
        token_types=token_types,
        merges=merges,
        bos_id=_token_id(ids, bos_token, "bos", folder),
        eos_id=_token_id(ids, eos_token, "eos", folder),
        chat_template=_chat_template(folder),
    )


def _chat_template(folder: Path) -> str | None:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None
    template = _read_json(path).get("chat_template")
    if isinstance(template, list):
        # Newer checkpoints keep several, by name ({"name", "template"}): the default one is the chat template.
        by_name = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = by_name.get("default")
    if template is not None and not isinstance(template, str):
        raise ConversionError(f"{path}: chat_template must be a string (Jinja source), got {type(template).__name__}")
    return template or None


def _from_tokenizer_json(path: Path) -> tuple[dict[str, int], list[str], dict[str, int], set[str]]:
    data = _read_json(path)
    model = data.get("model", {})
    if model.get("type") not in (None, "BPE") or "vocab" not in model or "merges" not in model:
        raise ConversionError(f"{path}: not a BPE tokenizer (model.vocab / model.merges missing)")
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]]
    added = {entry["content"]: entry["id"] for entry in data.get("added_tokens", [])}
    special = {entry["content"] for entry in data.get("added_tokens", []) if entry.get("special")}
    return model["vocab"], merges, added, special


def _from_vocab_and_merges(folder: Path) -> tuple[dict[str, int], list[str], dict[str, int], set[str]]:
    vocab = _read_json(folder / "vocab.json")
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [line for line in lines if line and not line.startswith("#version")]
    added_path = folder / "added_tokens.json"
    added = _read_json(added_path) if added_path.is_file() else {}
    return vocab, merges, added, set()


def _special_tokens_from_maps(folder: Path) -> set[str]:
    special: set[str] = set()
    for file_name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / file_name
        if not path.is_file():
            continue
        data = _read_json(path)
        for key in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"):
            if (token := _token_content(data.get(key))) is not None:
                special.add(token)
        for entry in data.get("additional_special_tokens") or []:
            if (token := _token_content(entry)) is not None:
                special.add(token)
        for entry in (data.get("added_tokens_decoder") or {}).values():
            if entry.get("special"):
                special.add(entry["content"])
    return special


def _bos_eos_tokens(folder: Path) -> tuple[str, str]:
    bos = eos = None
    for file_name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / file_name
        if path.is_file():
            data = _read_json(path)
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
        raise ConversionError(f"{folder}: the {role} token {token!r} is not in the vocabulary")
    return ids[token]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}: not valid JSON ({error})") from error
