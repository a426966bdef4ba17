"""Convert a Hugging Face GPT-J checkpoint folder into one GGUF file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gguf
import numpy as np

from ..errors import ConversionError
from .checkpoint import read_checkpoint
from .gguf_output import OutputTensor, write_gguf
from .hparams import GptjHparams, read_hparams
from .tensor_names import TensorSpec, expected_tensors, is_skipped
from .tensor_record import FLOAT_DTYPES, TensorRecord
from .tokenizer_data import read_tokenizer

#: ``--outtype`` -> GGUF general.file_type.
OUTTYPES: dict[str, gguf.LlamaFileType] = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
}


def convert_checkpoint(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    outtype: str = "f16",
    progress: bool = False,
) -> Path:
    """Convert the Hugging Face GPT-J folder ``src`` to the GGUF file ``out``; return ``out``.

    ``outtype`` "f32" writes every tensor as float32; "f16" writes the 2-D weight matrices
    as float16 and keeps norms and biases float32. Tensors are streamed in row blocks, so
    memory stays far below the model size. The file appears at ``out`` only once it is
    complete: on any error or interrupt nothing is left there. ``progress`` shows a tqdm
    bar of tensors written. Raises :class:`ConversionError` naming the file, tensor or
    field at fault.
    """
    src, out = Path(src), Path(out)
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown outtype {outtype!r}, expected one of {', '.join(OUTTYPES)}")
    if not src.is_dir():
        raise ConversionError(f"{src}: not a checkpoint folder")
    hparams = read_hparams(src)
    tokenizer = read_tokenizer(src, hparams.vocab_size)
    tensors = plan_tensors(read_checkpoint(src), hparams, outtype)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tensors), unit="tensor", desc=f"writing {out.name}")
    fd, temp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    try:
        write_gguf(
            Path(temp_name),
            hparams,
            tokenizer,
            OUTTYPES[outtype],
            tensors,
            on_tensor_written=None if bar is None else lambda tensor: bar.update(1),
        )
        os.replace(temp_name, out)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return out


def plan_tensors(
    records: dict[str, TensorRecord], hparams: GptjHparams, outtype: str
) -> list[OutputTensor]:
    """Match the checkpoint's tensors to the GGUF layout, checking names, shapes and dtypes."""
    specs = expected_tensors(hparams)
    expected_names = {spec.hf_name for spec in specs}
    unexpected = sorted(name for name in records if name not in expected_names and not is_skipped(name))
    if unexpected:
        raise ConversionError(f"unexpected tensor {unexpected[0]} in the checkpoint (not part of GPT-J)")
    return [OutputTensor(spec, _checked_record(records, spec), output_dtype(spec, outtype)) for spec in specs]


def output_dtype(spec: TensorSpec, outtype: str) -> np.dtype:
    """f16 files keep 1-D tensors (norms, biases) in f32: they are tiny and precision-sensitive."""
    if outtype == "f16" and len(spec.shape) == 2:
        return np.dtype(np.float16)
    return np.dtype(np.float32)


def _checked_record(records: dict[str, TensorRecord], spec: TensorSpec) -> TensorRecord:
    record = records.get(spec.hf_name)
    if record is None:
        raise ConversionError(f"tensor {spec.hf_name} is missing from the checkpoint")
    if record.shape != spec.shape:
        raise ConversionError(
            f"{record.path}: tensor {spec.hf_name} has shape {list(record.shape)}, expected {list(spec.shape)}"
        )
    if record.dtype not in FLOAT_DTYPES:
        raise ConversionError(f"{record.path}: tensor {spec.hf_name} has dtype {record.dtype}, expected F32/F16/BF16")
    return record
