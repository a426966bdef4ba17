"""The one place where Hugging Face GPT-J tensor names meet GGUF names (llama.cpp's ``gptj``).

Shapes are numpy (Hugging Face) order, e.g. ``q_proj`` is (n_embd, n_embd) and ``fc_in``
is (n_inner, n_embd); the gguf package reverses them into ggml order when writing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from ..errors import ConversionError
from .hparams import GptjHparams

# Buffers, not weights: the causal mask and its fill value. The original GPT-J-6B
# pytorch_model.bin saved them; the graph rebuilds the mask itself.
_SKIPPED = re.compile(r"transformer\.h\.\d+\.attn\.(bias|masked_bias)")


@dataclass(frozen=True)
class TensorSpec:
    """One GGUF tensor: where it comes from and the shape it must have."""

    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]


def is_skipped(hf_name: str) -> bool:
    """True for checkpoint entries that are buffers the converter drops on purpose."""
    return _SKIPPED.fullmatch(hf_name) is not None


def expected_tensors(hparams: GptjHparams) -> list[TensorSpec]:
    """Every tensor of a GPT-J GGUF file, in the order it is written."""
    n_embd, n_inner, n_vocab = hparams.n_embd, hparams.n_inner, hparams.vocab_size
    specs = [TensorSpec("transformer.wte.weight", "token_embd.weight", (n_vocab, n_embd))]
    for layer in range(hparams.n_layer):
        hf, gguf = f"transformer.h.{layer}", f"blk.{layer}"
        specs += [
            TensorSpec(f"{hf}.ln_1.weight", f"{gguf}.attn_norm.weight", (n_embd,)),
            TensorSpec(f"{hf}.ln_1.bias", f"{gguf}.attn_norm.bias", (n_embd,)),
            TensorSpec(f"{hf}.attn.q_proj.weight", f"{gguf}.attn_q.weight", (n_embd, n_embd)),
            TensorSpec(f"{hf}.attn.k_proj.weight", f"{gguf}.attn_k.weight", (n_embd, n_embd)),
            TensorSpec(f"{hf}.attn.v_proj.weight", f"{gguf}.attn_v.weight", (n_embd, n_embd)),
            TensorSpec(f"{hf}.attn.out_proj.weight", f"{gguf}.attn_output.weight", (n_embd, n_embd)),
            TensorSpec(f"{hf}.mlp.fc_in.weight", f"{gguf}.ffn_up.weight", (n_inner, n_embd)),
            TensorSpec(f"{hf}.mlp.fc_in.bias", f"{gguf}.ffn_up.bias", (n_inner,)),
            TensorSpec(f"{hf}.mlp.fc_out.weight", f"{gguf}.ffn_down.weight", (n_embd, n_inner)),
            TensorSpec(f"{hf}.mlp.fc_out.bias", f"{gguf}.ffn_down.bias", (n_embd,)),
        ]
    specs += [
        TensorSpec("transformer.ln_f.weight", "output_norm.weight", (n_embd,)),
        TensorSpec("transformer.ln_f.bias", "output_norm.bias", (n_embd,)),
        TensorSpec("lm_head.weight", "output.weight", (n_vocab, n_embd)),
        TensorSpec("lm_head.bias", "output.bias", (n_vocab,)),
    ]
    return specs


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
    specs = expected_tensors(hparams)
    expected_names = {spec.hf_name for spec in specs}
    unexpected = sorted(
        name for name in found if name not in expected_names and not (skip_buffers and is_skipped(name))
    )
    if unexpected:
        raise ConversionError(f"{source}: unexpected tensor {unexpected[0]} (not part of GPT-J)")
    pairs = []
    for spec in specs:
        tensor = found.get(spec.hf_name)
        if tensor is None:
            raise ConversionError(f"{source}: tensor {spec.hf_name} is missing")
        if tensor.shape != spec.shape:
            raise ConversionError(
                f"{source}: tensor {spec.hf_name} has shape {list(tensor.shape)}, expected {list(spec.shape)}"
            )
        pairs.append((spec, tensor))
    return pairs
