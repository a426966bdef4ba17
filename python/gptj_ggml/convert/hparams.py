"""GPT-J hyper-parameters from a Hugging Face ``config.json``, checked once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError


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


def read_hparams(folder: Path) -> GptjHparams:
    """Read and validate ``folder/config.json``; raise :class:`ConversionError` naming the field."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConversionError(f"{path}: missing (a Hugging Face checkpoint folder needs its config.json)") from None
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}: not valid JSON ({error})") from error

    model_type = config.get("model_type")
    if model_type != "gptj":
        raise ConversionError(f"{path}: model_type is {model_type!r}, expected 'gptj'")
    activation = config.get("activation_function", "gelu_new")
    if activation != "gelu_new":
        raise ConversionError(f"{path}: activation_function is {activation!r}, only 'gelu_new' is supported")
    if config.get("tie_word_embeddings", False):
        raise ConversionError(f"{path}: tie_word_embeddings is true; GPT-J has a separate lm_head")

    n_embd = _positive_int(config, "n_embd", path)
    n_head = _positive_int(config, "n_head", path)
    if n_embd % n_head:
        raise ConversionError(f"{path}: n_embd {n_embd} is not a multiple of n_head {n_head}")
    head_dim = n_embd // n_head
    rotary_dim = head_dim if config.get("rotary_dim") is None else _positive_int(config, "rotary_dim", path)
    if rotary_dim > head_dim or rotary_dim % 2:
        raise ConversionError(f"{path}: rotary_dim {rotary_dim} must be even and at most head_dim {head_dim}")
    n_inner = 4 * n_embd if config.get("n_inner") is None else _positive_int(config, "n_inner", path)

    return GptjHparams(
        name=str(config.get("_name_or_path") or Path(folder).resolve().name),
        vocab_size=_positive_int(config, "vocab_size", path),
        n_positions=_positive_int(config, "n_positions", path),
        n_embd=n_embd,
        n_layer=_positive_int(config, "n_layer", path),
        n_head=n_head,
        rotary_dim=rotary_dim,
        n_inner=n_inner,
        layer_norm_epsilon=float(config.get("layer_norm_epsilon", 1e-5)),
    )


def _positive_int(config: dict[str, Any], field: str, path: Path) -> int:
    value = config.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConversionError(f"{path}: field {field} is {value!r}, expected a positive integer")
    return value
