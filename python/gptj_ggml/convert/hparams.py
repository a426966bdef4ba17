"""GPT-J hyper-parameters from a Hugging Face ``config.json``, checked once, by the engine's rules.

:meth:`GptjHparams.check` is the Python side of ``csrc/gptj/hparams.cpp``: every file the
converter writes passes it, so every file it writes loads. Both sources of hyper-parameters
(``config.json`` here, the header of a legacy GGML file in :mod:`.legacy_ggml`) go through it,
each naming its own fields in the messages.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from .source_files import MAX_CONFIG_BYTES, describe, folder_file, is_regular_file, read_json

#: The engine's bound on every dimension (``positive()`` in csrc/gptj/hparams.cpp): far above any
#: GPT-J, and it keeps products of two dimensions well inside 64 bits.
MAX_DIMENSION = 1 << 24

#: The integer fields, in the order the engine checks them.
DIMENSIONS = ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer", "n_inner", "rotary_dim")

#: How config.json names each field (the dataclass follows it, but for the name).
CONFIG_FIELDS: Mapping[str, str] = {
    **{field: field for field in (*DIMENSIONS, "layer_norm_epsilon")},
    "name": "_name_or_path",
}


@dataclass(frozen=True)
class GptjHparams:
    """The shape of a GPT-J model; field names follow Hugging Face's ``GPTJConfig``."""

    name: str
    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    rotary_dim: int
    n_inner: int
    layer_norm_epsilon: float

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def check(self, source: Path, field_names: Mapping[str, str] = CONFIG_FIELDS) -> None:
        """Refuse what the engine would refuse to load, naming ``source`` and the field.

        ``field_names`` maps each dataclass field to the source's own name for it (the keys of
        config.json, the header fields of a legacy file).
        """

        def fail(field: str, problem: str) -> ConversionError:
            return ConversionError(f"{source}: {field_names.get(field, field)} {problem}")

        for field in DIMENSIONS:
            value = getattr(self, field)
            if not _is_int(value) or not 0 < value <= MAX_DIMENSION:
                raise fail(field, f"is {describe(value)}, expected an integer from 1 to {MAX_DIMENSION}")
        if self.n_embd % self.n_head:
            raise fail(
                "n_embd", f"{self.n_embd} is not a multiple of {field_names.get('n_head', 'n_head')} {self.n_head}"
            )
        if self.rotary_dim % 2 or self.rotary_dim > self.head_dim:
            raise fail("rotary_dim", f"{self.rotary_dim} must be even and at most the head size {self.head_dim}")
        # The file stores it as a float32, which the engine requires in (0, 1).
        epsilon = _as_float32(self.layer_norm_epsilon)
        if epsilon is None or not 0.0 < epsilon < 1.0:
            raise fail("layer_norm_epsilon", f"is {describe(self.layer_norm_epsilon)}, expected a number in (0, 1)")
        if not is_utf8_string(self.name):
            raise fail("name", f"is {describe(self.name)}, expected text")


def read_hparams(folder: Path) -> GptjHparams:
    """Read and validate ``folder/config.json``; raise :class:`ConversionError` naming the field."""
    folder = Path(folder)
    path = folder_file(folder, "config.json")
    if not path.exists():
        raise ConversionError(f"{path}: missing (a Hugging Face checkpoint folder needs its config.json)")
    if not is_regular_file(path):
        raise ConversionError(f"{path}: not a regular file")
    config = read_json(path, MAX_CONFIG_BYTES, "config.json")
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: holds {describe(config)}, expected a JSON object")

    model_type = config.get("model_type")
    if model_type != "gptj":
        raise ConversionError(f"{path}: model_type is {describe(model_type)}, expected 'gptj'")
    activation = config.get("activation_function", "gelu_new")
    if activation != "gelu_new":
        raise ConversionError(f"{path}: activation_function is {describe(activation)}, only 'gelu_new' is supported")
    tie = config.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise ConversionError(f"{path}: tie_word_embeddings is {describe(tie)}, expected true or false")
    if tie:
        raise ConversionError(f"{path}: tie_word_embeddings is true; GPT-J has a separate lm_head")

    n_embd, n_head = _integer(config, "n_embd", path), _integer(config, "n_head", path)
    # GPTJConfig's defaults: rotary_dim None means the whole head, n_inner None means 4 * n_embd.
    # (An n_head that does not divide n_embd is refused by check, before rotary_dim is looked at.)
    if config.get("rotary_dim") is None:
        rotary_dim = n_embd // n_head if n_head > 0 else 0
    else:
        rotary_dim = _integer(config, "rotary_dim", path)
    n_inner = 4 * n_embd if config.get("n_inner") is None else _integer(config, "n_inner", path)
    name = config.get("_name_or_path")
    if not name:
        name = printable_name(folder.resolve().name)

    hparams = GptjHparams(
        name=name,
        vocab_size=_integer(config, "vocab_size", path),
        n_positions=_integer(config, "n_positions", path),
        n_embd=n_embd,
        n_layer=_integer(config, "n_layer", path),
        n_head=n_head,
        rotary_dim=rotary_dim,
        n_inner=n_inner,
        layer_norm_epsilon=_number(config, "layer_norm_epsilon", 1e-5, path),
    )
    hparams.check(path)
    return hparams


def is_utf8_string(value: Any) -> bool:
    """True for a str that has a UTF-8 form (no lone surrogates) and no NUL, as GGUF strings need.

    The engine reads GGUF strings as C strings: a NUL would cut them short.
    """
    if not isinstance(value, str) or "\0" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(text: str) -> str:
    """``text`` made fit for a GGUF string (a name taken from a file or folder name)."""
    # A file name that is not UTF-8 reaches Python with surrogate escapes; GGUF needs UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8").replace("\0", "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(config: dict[str, Any], field: str, path: Path) -> int:
    value = config.get(field)
    if not _is_int(value):
        raise ConversionError(f"{path}: {field} is {describe(value)}, expected a positive integer")
    return value


def _number(config: dict[str, Any], field: str, default: float, path: Path) -> float:
    value = config.get(field, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConversionError(f"{path}: {field} is {describe(value)}, expected a number")
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        raise ConversionError(f"{path}: {field} is {describe(value)}, expected a number in (0, 1)") from None


def _as_float32(value: Any) -> float | None:
    """``value`` rounded to float32 as the file stores it; None when it has no float32 form."""
    if not isinstance(value, float) or not math.isfinite(value):
        return None
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return None
