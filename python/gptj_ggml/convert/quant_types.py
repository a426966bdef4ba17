"""Which ggml type each tensor of a GPT-J GGUF file gets, for every ``--outtype``: the one place.

The policy:

- 1-D tensors (norms and biases) stay float32: they are tiny and the graph adds them in f32.
- ``output.weight`` (the LM head) is at least ``q6_K`` when the requested type has fewer bits
  per weight (llama.cpp's choice): every logit goes through it, so its error reaches the
  next-token distribution without passing through any normalisation, and it is only ~3% of
  GPT-J-6B's weights (+0.1-0.2 bits per weight overall for ``q4_0``).
- ``token_embd.weight`` is a row lookup, and its error is damped by the first layer norm; it
  keeps the requested type, except for the two smallest types (``q2_K``, ``q3_K``), where it
  gets ``q4_K``: at 2-3 bits the embedding noise dominates the error of the first layer.
- With ``pure=True`` every matrix gets the requested type (like ``gpt-j-quantize`` of ggml's
  examples, and llama.cpp's ``--pure``).
- A matrix whose rows do not split into the type's blocks (k-quants need rows of a multiple
  of 256 values, the others of 32) falls back to the type llama.cpp falls back to
  (``FALLBACK``), then to ``f16``. GPT-J-6B's rows (4096 and 16384) always fit; the file
  lists each fallback under ``gptj_ggml.quantization.fallbacks``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

T = gguf.GGMLQuantizationType
FileType = gguf.LlamaFileType


@dataclass(frozen=True)
class OutType:
    """One ``--outtype``: the type of the large matrices and the file's ``general.file_type``."""

    name: str
    type: gguf.GGMLQuantizationType
    file_type: gguf.LlamaFileType


#: Every ``--outtype`` / ``quantize`` type, by the name the CLI takes. For k-quants the closest
#: llama.cpp file type is the "small" mix (all matrices of that type, output higher).
OUTTYPES: dict[str, OutType] = {
    out.name: out
    for out in (
        OutType("f32", T.F32, FileType.ALL_F32),
        OutType("f16", T.F16, FileType.MOSTLY_F16),
        OutType("bf16", T.BF16, FileType.MOSTLY_BF16),
        OutType("q8_0", T.Q8_0, FileType.MOSTLY_Q8_0),
        OutType("q6_K", T.Q6_K, FileType.MOSTLY_Q6_K),
        OutType("q5_1", T.Q5_1, FileType.MOSTLY_Q5_1),
        OutType("q5_0", T.Q5_0, FileType.MOSTLY_Q5_0),
        OutType("q5_K", T.Q5_K, FileType.MOSTLY_Q5_K_S),
        OutType("q4_1", T.Q4_1, FileType.MOSTLY_Q4_1),
        OutType("q4_0", T.Q4_0, FileType.MOSTLY_Q4_0),
        OutType("q4_K", T.Q4_K, FileType.MOSTLY_Q4_K_S),
        OutType("iq4_nl", T.IQ4_NL, FileType.MOSTLY_IQ4_NL),
        OutType("q3_K", T.Q3_K, FileType.MOSTLY_Q3_K_S),
        OutType("q2_K", T.Q2_K, FileType.MOSTLY_Q2_K),
    )
}

#: Types with 256-value blocks fall back to a 32-value-block type of at least their precision.
FALLBACK: dict[gguf.GGMLQuantizationType, gguf.GGMLQuantizationType] = {
    T.Q2_K: T.IQ4_NL,
    T.Q3_K: T.IQ4_NL,
    T.Q4_K: T.Q5_0,
    T.Q5_K: T.Q5_1,
    T.Q6_K: T.Q8_0,
    T.IQ4_NL: T.F16,
    T.Q4_0: T.F16,
    T.Q4_1: T.F16,
    T.Q5_0: T.F16,
    T.Q5_1: T.F16,
    T.Q8_0: T.F16,
}

OUTPUT_MIN_TYPE = T.Q6_K
SMALL_TYPES_EMBEDDING = T.Q4_K


def bits_per_weight(type: gguf.GGMLQuantizationType) -> float:
    """Bits one value takes in ``type`` (block scales included): q4_0 4.5, q4_K 4.5, q6_K 6.5625."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[type]
    return 8 * type_size / block_size


def type_name(type: gguf.GGMLQuantizationType) -> str:
    """ggml's own name of a type ("q4_K", "f16", "iq4_nl")."""
    name = type.name.lower()
    return name[:-2] + "_K" if name.endswith("_k") else name


@dataclass(frozen=True)
class TypeChoice:
    """The type a tensor gets, and why it is not the one the policy wanted (or "")."""

    type: gguf.GGMLQuantizationType
    fallback: str = ""


def choose_type(gguf_name: str, shape: tuple[int, ...], outtype: str, *, pure: bool = False) -> TypeChoice:
    """The ggml type of tensor ``gguf_name`` of numpy ``shape`` in an ``outtype`` file."""
    base = OUTTYPES[outtype].type
    if len(shape) != 2:
        return TypeChoice(T.F32)
    wanted = base
    if not pure and gguf_name == "output.weight" and bits_per_weight(base) < bits_per_weight(OUTPUT_MIN_TYPE):
        wanted = OUTPUT_MIN_TYPE
    if not pure and gguf_name == "token_embd.weight" and base in (T.Q2_K, T.Q3_K):
        wanted = SMALL_TYPES_EMBEDDING
    row_length = shape[-1]
    chosen = wanted
    while row_length % gguf.GGML_QUANT_SIZES[chosen][0]:
        chosen = FALLBACK[chosen]
    if chosen == wanted:
        return TypeChoice(chosen)
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    return TypeChoice(
        chosen,
        f"{gguf_name}: {type_name(wanted)} -> {type_name(chosen)} "
        f"(rows of {row_length} values; {type_name(wanted)} blocks hold {block})",
    )


def tensor_nbytes(shape: tuple[int, ...], type: gguf.GGMLQuantizationType) -> int:
    """Bytes of a tensor of numpy ``shape`` stored as ``type``."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[type]
    n_values = 1
    for size in shape:
        n_values *= size
    return n_values // block_size * type_size
