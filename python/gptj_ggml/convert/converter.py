"""Convert a Hugging Face GPT-J checkpoint folder into one GGUF file."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConversionError
from .checkpoint import read_checkpoint
from .gguf_output import OutputTensor, check_output_folder, write_atomically, write_gguf
from .hparams import GptjHparams, is_utf8_string, read_hparams
from .legacy_ggml import convert_legacy_ggml, is_legacy_ggml
from .quant_types import OUTTYPES, choose_type
from .tensor_names import match_tensors
from .tensor_record import FLOAT_DTYPES, TensorRecord
from .tokenizer_data import read_tokenizer


def convert_checkpoint(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    outtype: str | None = None,
    pure: bool = False,
    progress: bool = False,
    chat_template: str | None = None,
) -> Path:
    """Convert the GPT-J checkpoint ``src`` to the GGUF file ``out``; return ``out``.

    ``src`` is a Hugging Face checkpoint folder, or a legacy GGML file (``ggml-model-*.bin``
    of ggml's examples/gpt-j), which keeps its own tensor types unless ``outtype`` is given.
    ``outtype`` (default "f16") is any of :data:`OUTTYPES`: "f32" writes every tensor as
    float32; the others write the 2-D weight matrices in that type (quantized by ggml from the
    checkpoint's own values) and keep norms and biases float32, with the type policy of
    :mod:`gptj_ggml.convert.quant_types` (``pure`` turns its exceptions off). Tensors are
    streamed in row blocks, so memory stays far below the model size. The file appears at
    ``out`` only once it is complete: on any error or interrupt nothing is left there.
    ``progress`` shows a tqdm bar of tensors written. ``chat_template`` (a named template or a
    file of Jinja source, see :mod:`gptj_ggml.chat`) is stored as ``tokenizer.chat_template``
    instead of the checkpoint's own (``tokenizer_config.json``'s, copied when there is one).
    Raises :class:`ConversionError` naming the file, tensor or field at fault.
    """
    src, out = Path(src), Path(out)
    if outtype is not None and outtype not in OUTTYPES:
        raise ConversionError(f"unknown outtype {outtype!r}, expected one of {', '.join(OUTTYPES)}")
    check_output_folder(out)
    template_source = _template_source(chat_template)
    if src.is_file() and is_legacy_ggml(src):
        return convert_legacy_ggml(src, out, outtype=outtype, pure=pure, progress=progress, chat_template=template_source)
    if not src.is_dir():
        raise ConversionError(f"{src}: not a checkpoint folder (nor a legacy GGML file)")
    outtype = outtype or "f16"
    hparams = read_hparams(src)
    tensors = plan_tensors(src, read_checkpoint(src), hparams, outtype, pure=pure)
    # After the tensors: the vocabulary is padded to vocab_size entries, which only the
    # embedding's shape shows the checkpoint really has.
    tokenizer = read_tokenizer(src, hparams.vocab_size)
    if template_source is not None:
        tokenizer.chat_template = template_source
    write_atomically(
        out,
        lambda path, on_tensor_written: write_gguf(
            path, hparams, tokenizer, OUTTYPES[outtype].file_type, tensors, on_tensor_written
        ),
        len(tensors),
        progress,
    )
    return out


def _template_source(spec: str | None) -> str | None:
    if spec is None:
        return None
    from ..chat import ChatTemplateError, resolve_template

    try:
        source = resolve_template(spec).source
    except ChatTemplateError as error:
        raise ConversionError(str(error)) from None
    if not is_utf8_string(source):
        raise ConversionError(f"{spec}: the chat template is not text a GGUF file can hold (a NUL character?)")
    return source


def plan_tensors(
    source: Path, records: dict[str, TensorRecord], hparams: GptjHparams, outtype: str, *, pure: bool = False
) -> list[OutputTensor]:
    """Match the checkpoint's tensors to the GGUF layout, checking names, shapes and dtypes."""
    tensors = []
    for spec, record in match_tensors(source, records, hparams, skip_buffers=True):
        if record.dtype not in FLOAT_DTYPES:
            raise ConversionError(
                f"{record.path}: tensor {spec.hf_name} has dtype {record.dtype}, expected F32/F16/BF16"
            )
        choice = choose_type(spec.gguf_name, spec.shape, outtype, pure=pure)
        tensors.append(OutputTensor(spec, record, choice.type, fallback=choice.fallback))
    return tensors
