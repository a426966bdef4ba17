"""The one place where Hugging Face GPT-J tensor names meet GGUF names (llama.cpp's ``gptj``).

Shapes are numpy (Hugging Face) order, e.g. ``q_proj`` is (n_embd, n_embd) and ``fc_in``
is (n_inner, n_embd); the gguf package reverses them into ggml order when writing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from ..errors import ConversionError
from .hparams import GptjHparams
from .source_files import display_name

# Buffers, not weights: the causal mask and its fill value. The original GPT-J-6B
# pytorch_model.bin saved them; the graph rebuilds the mask itself.
_SKIPPED = re.compile(r"transformer\.h\.[0-9]+\.attn\.(bias|masked_bias)")


@dataclass(frozen=True)
class TensorSpec:
    """One GGUF tensor: where it comes from and the shape it must have."""

    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]


def is_skipped(hf_name: str) -> bool:
    """True for checkpoint entries that are buffers the converter drops on purpose."""
    return _SKIPPED.fullmatch(hf_name) is not None


# Per layer: (Hugging Face suffix, GGUF suffix, shape from (n_embd, n_inner)).
_LAYER_TENSORS: tuple[tuple[str, str, Callable[[int, int], tuple[int, ...]]], ...] = (
    ("ln_1.weight", "attn_norm.weight", lambda e, i: (e,)),
    ("ln_1.bias", "attn_norm.bias", lambda e, i: (e,)),
    ("attn.q_proj.weight", "attn_q.weight", lambda e, i: (e, e)),
    ("attn.k_proj.weight", "attn_k.weight", lambda e, i: (e, e)),
    ("attn.v_proj.weight", "attn_v.weight", lambda e, i: (e, e)),
    ("attn.out_proj.weight", "attn_output.weight", lambda e, i: (e, e)),
    ("mlp.fc_in.weight", "ffn_up.weight", lambda e, i: (i, e)),
    ("mlp.fc_in.bias", "ffn_up.bias", lambda e, i: (i,)),
    ("mlp.fc_out.weight", "ffn_down.weight", lambda e, i: (e, i)),
    ("mlp.fc_out.bias", "ffn_down.bias", lambda e, i: (e,)),
)
_LAYER_NAME = re.compile(
    r"transformer\.h\.(0|[1-9][0-9]{0,9})\.(" + "|".join(re.escape(suffix) for suffix, _, _ in _LAYER_TENSORS) + ")"
)
_GLOBAL_NAMES = frozenset(
    {"transformer.wte.weight", "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight", "lm_head.bias"}
)


def expected_tensors(hparams: GptjHparams) -> list[TensorSpec]:
    """Every tensor of a GPT-J GGUF file, in the order it is written."""
    return list(iter_expected_tensors(hparams))


def iter_expected_tensors(hparams: GptjHparams) -> Iterator[TensorSpec]:
    """The tensors of :func:`expected_tensors`, one at a time (n_layer may be absurd until checked)."""
    n_embd, n_inner, n_vocab = hparams.n_embd, hparams.n_inner, hparams.vocab_size
    yield TensorSpec("transformer.wte.weight", "token_embd.weight", (n_vocab, n_embd))
    for layer in range(hparams.n_layer):
        for hf_suffix, gguf_suffix, shape in _LAYER_TENSORS:
            yield TensorSpec(f"transformer.h.{layer}.{hf_suffix}", f"blk.{layer}.{gguf_suffix}", shape(n_embd, n_inner))
    yield TensorSpec("transformer.ln_f.weight", "output_norm.weight", (n_embd,))
    yield TensorSpec("transformer.ln_f.bias", "output_norm.bias", (n_embd,))
    yield TensorSpec("lm_head.weight", "output.weight", (n_vocab, n_embd))
    yield TensorSpec("lm_head.bias", "output.bias", (n_vocab,))


def is_expected(hf_name: str, hparams: GptjHparams) -> bool:
    """True when ``hf_name`` is one of :func:`expected_tensors`' Hugging Face names."""
    if hf_name in _GLOBAL_NAMES:
        return True
    match = _LAYER_NAME.fullmatch(hf_name)
    return match is not None and int(match.group(1)) < hparams.n_layer


class SourceTensor(Protocol):
    """A tensor found in a source file, as matching sees it: its shape in numpy order."""

    @property
    def shape(self) -> tuple[int, ...]: ...


FoundTensor = TypeVar("FoundTensor", bound=SourceTensor)


def match_tensors(
    source: Path, found: Mapping[str, FoundTensor], hparams: GptjHparams, *, skip_buffers: bool = False
) -> list[tuple[TensorSpec, FoundTensor]]:
    """Pair every tensor of the GGUF file, in the order it is written, with the tensor of ``found``
    (by Hugging Face name) it comes from.

    ``skip_buffers`` lets the causal-mask buffers that checkpoints saved pass (see :func:`is_skipped`).
    Raises :class:`ConversionError` naming ``source`` and the tensor: one that is not part of
    GPT-J, one that is missing, or one whose shape is not the one ``hparams`` give.
    """
    unexpected = sorted(
        name for name in found if not is_expected(name, hparams) and not (skip_buffers and is_skipped(name))
    )
    if unexpected:
        raise ConversionError(f"{source}: unexpected tensor {display_name(unexpected[0])} (not part of GPT-J)")
    # One spec at a time: a file with a few tensors and an absurd n_layer fails at the first
    # missing tensor, having made no more specs than the file has tensors.
    pairs = []
    for spec in iter_expected_tensors(hparams):
        tensor = found.get(spec.hf_name)
        if tensor is None:
            raise ConversionError(f"{source}: tensor {spec.hf_name} is missing")
        if tensor.shape != spec.shape:
            raise ConversionError(
                f"{source}: tensor {spec.hf_name} has shape {list(tensor.shape)}, expected {list(spec.shape)}"
            )
        pairs.append((spec, tensor))
    return pairs
