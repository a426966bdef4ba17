"""Legacy GGML GPT-J files (ggml's ``examples/gpt-j``) -> GGUF.

The format, as ``convert-h5-to-ggml.py`` and ``gpt-j-quantize`` write it (all integers
little-endian int32):

- magic ``0x67676d6c`` ("ggml", so the file starts with the bytes ``lmgg``);
- hyper-parameters n_vocab, n_ctx, n_embd, n_head, n_layer, n_rot, ftype, where a quantized
  file's ftype is ``ggml_ftype + 1000 * GGML_QNT_VERSION`` (2002 for q4_0);
- the vocabulary: a token count, then per token its byte length and its raw bytes (not
  GPT-2's byte-to-unicode spelling), in id order; there are no merges;
- tensors until the end of the file: n_dims, name length, ggml type, the dimensions in
  ggml order (row length first), the name (Hugging Face's), then the data, unaligned.

Quantized tensors are stored with ggml's block layouts, which GGUF shares, so they are copied
byte for byte. The tokenizer's merge ranks are derived from the token ids when the model is
loaded (see csrc/gptj/tokenizer/vocab.cpp).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import gguf

from ..errors import ConversionError
from .gguf_output import OutputTensor, check_output_folder, write_atomically, write_gguf
from .hparams import GptjHparams, printable_name
from .quant_types import OUTTYPES, choose_type, tensor_nbytes, type_name
from .source_files import display_name
from .tensor_names import TensorSpec, match_tensors
from .tensor_record import TensorRecord, contiguous_strides
from .tokenizer_data import ENDOFTEXT, TokenizerData, TokenType

#: The first four bytes of a legacy GGML file (the uint32 0x67676d6c, little-endian).
MAGIC = b"lmgg"
#: Other legacy magics (llama.cpp's ggmf/ggjt): GGML-family files, but not GPT-J's format.
_OTHER_MAGICS = {b"fmgg": "ggmf", b"tjgg": "ggjt", b"algg": "ggla"}
#: ggml's GGML_QNT_VERSION_FACTOR and the only block-layout version GGUF shares (GGML_QNT_VERSION).
QNT_VERSION_FACTOR = 1000
QNT_VERSION = 2
#: No GPT-2 token is longer than 128 bytes: a longer one means a corrupt vocabulary.
MAX_TOKEN_BYTES = 1024
MAX_NAME_BYTES = 1024

#: How a legacy header names the hyper-parameters (for the messages of GptjHparams.check).
HEADER_FIELDS = {
    "vocab_size": "n_vocab", "n_positions": "n_ctx", "n_embd": "n_embd", "n_head": "n_head",
    "n_layer": "n_layer", "rotary_dim": "n_rot", "n_inner": "n_inner (the rows of transformer.h.0.mlp.fc_in.weight)",
    "layer_norm_epsilon": "layer_norm_epsilon", "name": "the file name",
}  # fmt: skip
#: The smallest record a token takes in the vocabulary: its int32 length (the bytes may be none).
_MIN_TOKEN_BYTES = 4

_INT32 = struct.Struct("<i")
_HPARAMS = struct.Struct("<7i")
_TENSOR_HEADER = struct.Struct("<3i")

T = gguf.GGMLQuantizationType
#: ggml_ftype -> the --outtype it corresponds to (the type of the file's matrices).
FTYPES: dict[int, str] = {
    0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1",
    10: "q2_K", 11: "q3_K", 12: "q4_K", 13: "q5_K", 14: "q6_K",
}  # fmt: skip
#: Tensor types the legacy tools write (ggml_type values).
TENSOR_TYPES = {T.F32, T.F16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K}


@dataclass(frozen=True)
class LegacyHparams:
    """The header of a legacy file; ``ftype`` without the quantization-version factor."""

    n_vocab: int
    n_ctx: int
    n_embd: int
    n_head: int
    n_layer: int
    n_rot: int
    ftype: int
    quantization_version: int


@dataclass(frozen=True)
class LegacyTensor:
    """One tensor of a legacy file: numpy-order shape, ggml type, and where its data lies."""

    name: str
    type: gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass
class LegacyGgmlFile:
    """A parsed and validated legacy GGML GPT-J file (tensor data is not read)."""

    path: Path
    hparams: LegacyHparams
    tokens: list[bytes]
    tensors: dict[str, LegacyTensor]


def is_legacy_ggml(path: Path) -> bool:
    """True when ``path`` starts with the magic of ggml's legacy example files."""
    with open(path, "rb") as file:
        return file.read(4) == MAGIC


def read_legacy_ggml(path: str | os.PathLike[str]) -> LegacyGgmlFile:
    """Parse and check the header, vocabulary and tensor directory of a legacy GGML file.

    Raises :class:`ConversionError` naming the file and the field, token or tensor at fault.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as file:
        reader = _Reader(file, path, size)
        magic = reader.read(4, "the magic")
        if magic != MAGIC:
            other = _OTHER_MAGICS.get(magic)
            what = f"a legacy llama.cpp file ({other})" if other else "not a legacy GGML file (bad magic)"
            raise ConversionError(f"{path}: {what}; expected ggml's GPT-J format")
        hparams = _read_hparams(reader)
        tokens = _read_vocab(reader, hparams)
        tensors = _read_tensor_directory(reader, hparams)
    return LegacyGgmlFile(path, hparams, tokens, tensors)


def convert_legacy_ggml(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    outtype: str | None = None,
    pure: bool = False,
    progress: bool = False,
    chat_template: str | None = None,
) -> Path:
    """Convert the legacy GGML file ``src`` to the GGUF file ``out``; return ``out``.

    With ``outtype`` None every matrix keeps its type (quantized ones are copied byte for
    byte) and norms and biases are float32. Otherwise matrices stored as f32/f16 are
    converted or quantized to ``outtype`` with the usual type policy; a quantized matrix is
    never quantized again (that would compound two errors): it must already have the type
    asked for.
    """
    out = Path(out)
    check_output_folder(out)
    legacy = read_legacy_ggml(src)
    hparams = _gptj_hparams(legacy)
    tensors = [
        _output_tensor(legacy.path, spec, tensor, outtype, pure)
        for spec, tensor in match_tensors(legacy.path, legacy.tensors, hparams)
    ]
    file_type = OUTTYPES[outtype or FTYPES[legacy.hparams.ftype]].file_type
    tokenizer = legacy_tokenizer(legacy)
    tokenizer.chat_template = chat_template  # Jinja source: legacy files have none of their own
    tokenizer.check(legacy.path)
    write_atomically(
        out,
        lambda path, on_tensor_written: write_gguf(path, hparams, tokenizer, file_type, tensors, on_tensor_written),
        len(tensors),
        progress,
    )
    return out


def legacy_tokenizer(legacy: LegacyGgmlFile) -> TokenizerData:
    """The file's vocabulary as GGUF stores it: GPT-2's byte-to-unicode spelling, no merges.

    Token types follow GPT-J's tokenizer: ``<|endoftext|>`` is a control token and the
    tokens after it (GPT-J's ``<|extratoken_N|>``, from added_tokens.json) are added tokens;
    rows past the vocabulary pad the embedding.
    """
    alphabet = _bytes_to_unicode()
    tokens = ["".join(alphabet[byte] for byte in token) for token in legacy.tokens]
    try:
        eos_id = tokens.index(ENDOFTEXT)
    except ValueError:
        raise ConversionError(f"{legacy.path}: the vocabulary has no {ENDOFTEXT} token (not GPT-J's vocabulary?)")
    token_types = [
        int(TokenType.CONTROL if i == eos_id else TokenType.USER_DEFINED if i > eos_id else TokenType.NORMAL)
        for i in range(len(tokens))
    ]
    for i in range(len(tokens), legacy.hparams.n_vocab):
        tokens.append(f"[PAD{i}]")
        token_types.append(int(TokenType.UNUSED))
    return TokenizerData(tokens=tokens, token_types=token_types, merges=[], bos_id=eos_id, eos_id=eos_id)


class _Reader:
    """Sequential reads that name what was cut off when the file ends early."""

    def __init__(self, file: BinaryIO, path: Path, size: int) -> None:
        self.file, self.path, self.size = file, path, size

    def read(self, n: int, what: str) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise ConversionError(f"{self.path}: the file ends inside {what} (truncated file?)")
        return data

    def int32s(self, layout: struct.Struct, what: str) -> tuple[int, ...]:
        return layout.unpack(self.read(layout.size, what))

    def tell(self) -> int:
        return self.file.tell()

    def skip(self, n: int) -> None:
        self.file.seek(n, os.SEEK_CUR)


def _read_hparams(reader: _Reader) -> LegacyHparams:
    n_vocab, n_ctx, n_embd, n_head, n_layer, n_rot, raw_ftype = reader.int32s(_HPARAMS, "the hyper-parameters")
    path = reader.path
    # The engine's rules, before anything is sized from these numbers; n_inner is not in the
    # header (it is checked once the tensors are known, see _gptj_hparams).
    hparams = LegacyHparams(n_vocab, n_ctx, n_embd, n_head, n_layer, n_rot, 0, 0)
    _as_gptj_hparams(path, hparams, n_inner=1).check(path, HEADER_FIELDS)
    ftype = raw_ftype % QNT_VERSION_FACTOR if raw_ftype >= 0 else raw_ftype
    if ftype not in FTYPES:
        raise ConversionError(f"{path}: unknown ftype {raw_ftype} in the header")
    return LegacyHparams(n_vocab, n_ctx, n_embd, n_head, n_layer, n_rot, ftype, raw_ftype // QNT_VERSION_FACTOR)


def _read_vocab(reader: _Reader, hparams: LegacyHparams) -> list[bytes]:
    (n_tokens,) = reader.int32s(_INT32, "the vocabulary size")
    path = reader.path
    if not 0 < n_tokens <= hparams.n_vocab:
        raise ConversionError(
            f"{path}: corrupt vocabulary: it says it has {n_tokens} tokens, the model has {hparams.n_vocab}"
        )
    if n_tokens * _MIN_TOKEN_BYTES > reader.size - reader.tell():
        raise ConversionError(
            f"{path}: corrupt vocabulary: {n_tokens} tokens need more than the {reader.size - reader.tell()} "
            "bytes left in the file (truncated?)"
        )
    tokens = []
    for token_id in range(n_tokens):
        (length,) = struct.unpack("<I", reader.read(4, f"the vocabulary (length of token {token_id})"))
        if length > MAX_TOKEN_BYTES or reader.tell() + length > reader.size:
            raise ConversionError(
                f"{path}: corrupt vocabulary: token {token_id} has an absurd length of {length} bytes"
            )
        tokens.append(reader.read(length, f"the vocabulary (token {token_id})"))
    return tokens


def _read_tensor_directory(reader: _Reader, hparams: LegacyHparams) -> dict[str, LegacyTensor]:
    path = reader.path
    tensors: dict[str, LegacyTensor] = {}
    while reader.tell() < reader.size:
        n_dims, name_length, raw_type = reader.int32s(_TENSOR_HEADER, f"the header of tensor {len(tensors)}")
        where = f"tensor {len(tensors)}"
        if not 1 <= n_dims <= 4 or not 0 < name_length <= MAX_NAME_BYTES:
            raise ConversionError(
                f"{path}: corrupt header of {where}: {n_dims} dimensions, a name of {name_length} bytes"
            )
        ne = struct.unpack(f"<{n_dims}i", reader.read(4 * n_dims, f"the shape of {where}"))
        name = reader.read(name_length, f"the name of {where}").decode("utf-8", errors="replace")
        shown = display_name(name)
        if any(size <= 0 for size in ne):
            raise ConversionError(f"{path}: tensor {shown} has a bad shape {list(ne)}")
        if raw_type not in {int(t) for t in TENSOR_TYPES}:
            raise ConversionError(f"{path}: tensor {shown} has unknown ggml type {raw_type}")
        tensor_type = T(raw_type)
        if tensor_type not in (T.F32, T.F16) and hparams.quantization_version != QNT_VERSION:
            raise ConversionError(
                f"{path}: tensor {shown} is {type_name(tensor_type)} in quantization version "
                f"{hparams.quantization_version} (ggml before mid-2023); only version {QNT_VERSION} is supported: "
                "quantize the f16 file again with a current gpt-j-quantize, or convert the f16 file"
            )
        block_size = gguf.GGML_QUANT_SIZES[tensor_type][0]
        if ne[0] % block_size:
            raise ConversionError(
                f"{path}: tensor {shown} has rows of {ne[0]} values, not whole {type_name(tensor_type)} blocks"
            )
        shape = tuple(reversed(ne))
        nbytes = tensor_nbytes(shape, tensor_type)
        offset = reader.tell()
        if offset + nbytes > reader.size:
            raise ConversionError(
                f"{path}: tensor {shown} is truncated: its data needs {nbytes} bytes from offset {offset}, "
                f"the file ends {reader.size - offset} bytes after it"
            )
        if name in tensors:
            raise ConversionError(f"{path}: tensor {shown} appears twice")
        tensors[name] = LegacyTensor(name, tensor_type, shape, offset, nbytes)
        reader.skip(nbytes)
    return tensors


def _gptj_hparams(legacy: LegacyGgmlFile) -> GptjHparams:
    fc_in = legacy.tensors.get("transformer.h.0.mlp.fc_in.weight")
    # ggml's example assumes n_inner = 4 * n_embd; the tensor says what it really is.
    n_inner = fc_in.shape[0] if fc_in is not None else 4 * legacy.hparams.n_embd
    hparams = _as_gptj_hparams(legacy.path, legacy.hparams, n_inner)
    hparams.check(legacy.path, HEADER_FIELDS)
    return hparams


def _as_gptj_hparams(path: Path, h: LegacyHparams, n_inner: int) -> GptjHparams:
    return GptjHparams(
        name=printable_name(path.stem),
        vocab_size=h.n_vocab,
        n_positions=h.n_ctx,
        n_embd=h.n_embd,
        n_layer=h.n_layer,
        n_head=h.n_head,
        rotary_dim=h.n_rot,
        n_inner=n_inner,
        layer_norm_epsilon=1e-5,  # not stored; GPT-J's value, which ggml's example hard-codes
    )


def _output_tensor(path: Path, spec: TensorSpec, tensor: LegacyTensor, outtype: str | None, pure: bool) -> OutputTensor:
    is_float = tensor.type in (T.F32, T.F16)
    if len(spec.shape) == 1 or outtype is None:
        wanted, fallback = (T.F32 if len(spec.shape) == 1 else tensor.type), ""
    else:
        choice = choose_type(spec.gguf_name, spec.shape, outtype, pure=pure)
        wanted, fallback = choice.type, choice.fallback
    if is_float:
        record = TensorRecord(
            name=tensor.name, path=path, dtype=tensor.type.name, shape=tensor.shape,
            strides=contiguous_strides(tensor.shape), offset=tensor.offset,
            storage_begin=tensor.offset, storage_end=tensor.offset + tensor.nbytes,
        )  # fmt: skip
        return OutputTensor(spec, record, wanted, fallback=fallback)
    if wanted != tensor.type:
        raise ConversionError(
            f"{path}: tensor {tensor.name} is {type_name(tensor.type)}; it cannot become {type_name(wanted)} "
            "without quantizing it twice: convert it without --outtype (or from the f16 file)"
        )
    n_rows = math.prod(tensor.shape[:-1])
    byte_shape = (n_rows, tensor.nbytes // n_rows)
    record = TensorRecord(
        name=tensor.name, path=path, dtype="U8", shape=byte_shape,
        strides=contiguous_strides(byte_shape), offset=tensor.offset,
        storage_begin=tensor.offset, storage_end=tensor.offset + tensor.nbytes,
    )  # fmt: skip
    return OutputTensor(spec, record, tensor.type, raw=True)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (as in its encoder.py)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    n = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + n)
            n += 1
    return mapping


__all__ = [
    "LegacyGgmlFile",
    "LegacyHparams",
    "LegacyTensor",
    "convert_legacy_ggml",
    "is_legacy_ggml",
    "legacy_tokenizer",
    "read_legacy_ggml",
]
