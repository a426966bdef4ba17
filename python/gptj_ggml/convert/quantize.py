"""Quantize a GPT-J GGUF file (f32, f16 or bf16) into another GGUF file.

The metadata is copied, ``general.file_type`` set, and each matrix is converted with the type
policy of :mod:`gptj_ggml.convert.quant_types` while it streams through in row blocks: ggml
quantizes each block on all cores (``_core.quantize_rows``), and memory stays at a few blocks
whatever the model's size. Converting a checkpoint with ``--outtype`` runs the same code, so
``quantize(convert(f16 checkpoint, "f16"), "q4_0")`` is bit for bit ``convert(..., "q4_0")``.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf

from ..errors import ConversionError
from .gguf_input import GgufHeader, GgufTensor, read_gguf_header
from .gguf_output import FALLBACKS_KEY, OutputTensor, check_output_folder, write_atomically, write_gguf_file
from .legacy_ggml import convert_legacy_ggml, is_legacy_ggml
from .quant_types import OUTTYPES, choose_type, type_name
from .tensor_names import TensorSpec
from .tensor_record import TensorRecord, contiguous_strides

#: Keys that describe the old encoding, rewritten for the new one.
_REWRITTEN_KEYS = {"general.architecture", "general.file_type", "general.quantization_version", FALLBACKS_KEY}
_T = gguf.GGMLQuantizationType
_SOURCE_TYPES = {_T.F32: "F32", _T.F16: "F16", _T.BF16: "BF16"}

__all__ = ["OUTTYPES", "quantize"]


def quantize(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    outtype: str,
    *,
    pure: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``src`` (a GPT-J GGUF, or a legacy GGML file) with its matrices in ``outtype``.

    ``outtype`` is one of :data:`OUTTYPES` ("q4_0", "q4_K", "q8_0", "bf16", ...); ``pure``
    gives ``output.weight`` and ``token_embd.weight`` that type too instead of the policy's
    choice. The source's matrices must be f32, f16 or bf16 (a matrix already in ``outtype`` is
    copied). The file appears at ``out`` only when complete. Raises
    :class:`ConversionError` naming the file and tensor at fault.
    """
    src, out = Path(src), Path(out)
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown type {outtype!r}, expected one of {', '.join(OUTTYPES)}")
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    check_output_folder(out)
    if out.resolve() == src.resolve():
        raise ConversionError(f"{out}: the output would overwrite the input")
    if is_legacy_ggml(src):
        return convert_legacy_ggml(src, out, outtype=outtype, pure=pure, progress=progress)
    header = _open_gguf(src)
    tensors = [_plan(src, tensor, outtype, pure) for tensor in header.tensors]
    file_type = OUTTYPES[outtype].file_type

    def add_metadata(writer: gguf.GGUFWriter) -> None:
        for name, field in header.fields.items():
            if name not in _REWRITTEN_KEYS:
                writer.add_key_value(name, field.value, field.type, sub_type=field.sub_type)
        writer.add_file_type(int(file_type))

    write_atomically(
        out,
        lambda path, on_tensor_written: write_gguf_file(path, add_metadata, tensors, on_tensor_written),
        len(tensors),
        progress,
    )
    return out


def _open_gguf(src: Path) -> GgufHeader:
    with open(src, "rb") as file:
        magic = file.read(4)
    if magic != b"GGUF":
        raise ConversionError(f"{src}: not a GGUF file (nor a legacy GGML file)")
    header = read_gguf_header(src)
    architecture = header.fields.get("general.architecture")
    found = None if architecture is None else architecture.value
    if found != "gptj":
        raise ConversionError(f"{src}: general.architecture is {found!r}, expected 'gptj'")
    return header


def _plan(src: Path, tensor: GgufTensor, outtype: str, pure: bool) -> OutputTensor:
    shape = tensor.shape
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    spec = TensorSpec(hf_name=tensor.name, gguf_name=tensor.name, shape=shape)
    choice = choose_type(tensor.name, shape, outtype, pure=pure)
    source_type = tensor.type
    if source_type == choice.type:
        byte_shape = (1, tensor.nbytes) if len(shape) == 1 else (shape[0], tensor.nbytes // shape[0])
        record = _record(src, tensor, "U8", byte_shape)
        return OutputTensor(spec, record, choice.type, raw=True, fallback=choice.fallback)
    if source_type not in _SOURCE_TYPES:
        raise ConversionError(
            f"{src}: tensor {tensor.name} is {type_name(source_type)}; quantize from an f32, f16 or bf16 file "
            "(quantizing quantized weights again compounds the errors)"
        )
    return OutputTensor(spec, _record(src, tensor, _SOURCE_TYPES[source_type], shape), choice.type, fallback=choice.fallback)


def _record(src: Path, tensor: GgufTensor, dtype: str, shape: tuple[int, ...]) -> TensorRecord:
    return TensorRecord(
        name=tensor.name,
        path=src,
        dtype=dtype,
        shape=shape,
        strides=contiguous_strides(shape),
        offset=tensor.offset,
        storage_begin=tensor.offset,
        storage_end=tensor.offset + tensor.nbytes,
    )
