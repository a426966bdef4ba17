"""Write a GPT-J GGUF file: metadata with llama.cpp's ``gptj`` keys, then tensors streamed in row blocks.

``GGUFWriter.add_tensor`` keeps every array in memory until the end, and
``write_tensor_data`` takes a whole tensor at once (token_embd alone is 825 MB in f32),
so tensors are declared with ``add_tensor_info`` and their data is written here block by
block, with the same alignment ``write_tensor_data`` uses. Blocks of a quantized type are
quantized by ggml (``_core.quantize_rows``, on all cores) as they pass.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .hparams import GptjHparams
from .quant_types import tensor_nbytes
from .tensor_names import TensorSpec
from .tensor_record import TensorRecord
from .tokenizer_data import TokenizerData

ARCHITECTURE = "gptj"

# Source bytes read per block: large enough for fast sequential I/O, small enough that
# the converter's memory does not depend on the largest tensor.
BLOCK_BYTES = 32 * 1024 * 1024


#: Written as ``general.quantization_version`` in files with quantized tensors: ggml's
#: GGML_QNT_VERSION, the version of the block layouts.
QUANTIZATION_VERSION = 2
#: A string array naming each tensor whose type fell back from the policy's choice, and why.
FALLBACKS_KEY = "gptj_ggml.quantization.fallbacks"

_NUMPY_TYPES = {gguf.GGMLQuantizationType.F32: np.dtype("<f4"), gguf.GGMLQuantizationType.F16: np.dtype("<f2")}


@dataclass(frozen=True)
class OutputTensor:
    """A tensor to write: its GGUF name and shape, where to read it, and its ggml type.

    ``raw`` records hold the bytes of ``type`` already (a quantized tensor of a legacy GGML
    file), shaped (rows, bytes per row), and are copied; others hold values, converted or
    quantized to ``type``. ``fallback`` says why ``type`` is not the policy's first choice.
    """

    spec: TensorSpec
    record: TensorRecord
    type: gguf.GGMLQuantizationType
    raw: bool = False
    fallback: str = ""

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.spec.shape, self.type)

    @property
    def is_quantized(self) -> bool:
        return self.type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)


def write_gguf(
    path: Path,
    hparams: GptjHparams,
    tokenizer: TokenizerData,
    file_type: gguf.LlamaFileType,
    tensors: Sequence[OutputTensor],
    on_tensor_written: Callable[[OutputTensor], None] | None = None,
) -> None:
    """Write the whole GGUF file at ``path`` (which the caller makes atomic)."""
    write_gguf_file(
        path, lambda writer: _add_metadata(writer, hparams, tokenizer, file_type), tensors, on_tensor_written
    )


def write_gguf_file(
    path: Path,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    tensors: Sequence[OutputTensor],
    on_tensor_written: Callable[[OutputTensor], None] | None = None,
) -> None:
    """Write a GGUF file whose key/values ``add_metadata`` adds, then ``tensors`` in row blocks.

    The quantization keys (``general.quantization_version``, the fallbacks) are added here,
    from the tensors.
    """
    writer = gguf.GGUFWriter(path, ARCHITECTURE)
    try:
        add_metadata(writer)
        if any(tensor.is_quantized for tensor in tensors):
            writer.add_quantization_version(QUANTIZATION_VERSION)
        fallbacks = [tensor.fallback for tensor in tensors if tensor.fallback]
        if fallbacks:
            writer.add_array(FALLBACKS_KEY, fallbacks)
        for tensor in tensors:
            writer.add_tensor_info(
                tensor.spec.gguf_name, tensor.spec.shape, np.dtype(np.float32), tensor.nbytes, raw_dtype=tensor.type
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None and len(writer.fout) == 1
        file = writer.fout[0]
        for tensor in tensors:
            writer.write_padding(file, file.tell())
            for block in _encoded_blocks(tensor):
                block.tofile(file)
            writer.write_padding(file, tensor.nbytes)
            if on_tensor_written is not None:
                on_tensor_written(tensor)
        writer.flush()
    finally:
        writer.close()


def check_output_folder(out: Path) -> None:
    """Raise FileNotFoundError naming the folder of ``out`` when there is none, before any work is done."""
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: no such folder, for the output {out}")


def write_atomically(
    out: Path,
    write: Callable[[Path, Callable[[OutputTensor], None] | None], None],
    n_tensors: int,
    progress: bool,
) -> None:
    """Run ``write(temp_path, on_tensor_written)`` and rename the result to ``out``.

    On any error or interrupt the temporary file is removed: nothing is left at ``out``, and a
    file already there stays as it was until the new one is complete, then takes its place
    with its permissions. Interrupts are SIGINT (KeyboardInterrupt) and, in the main thread,
    SIGTERM and SIGHUP: the file is removed, the handlers that were there before are put back
    and the signal is raised again for them (by default it then ends the process, as it would
    have). A full disk is reported as such, naming ``out``.
    """
    try:
        fd, temp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    except OSError as error:
        # Python's message would name the temporary file, which the user never asked for.
        raise type(error)(f"{out.parent}: cannot write the output {out.name} there ({error.strerror})") from None
    os.close(fd)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_tensors, unit="tensor", desc=f"writing {out.name}")
    try:
        with _signals_interrupt():
            write(Path(temp_name), None if bar is None else lambda tensor: bar.update(1))
            os.chmod(temp_name, _output_mode(out))
            os.replace(temp_name, out)
    except _Signalled as signalled:
        Path(temp_name).unlink(missing_ok=True)
        signal.raise_signal(signalled.signum)
        # The handler before ours returned: the conversion is stopped all the same.
        raise InterruptedError(
            errno.EINTR, f"{out}: not written, interrupted by {signal.Signals(signalled.signum).name}"
        ) from None
    except OSError as error:
        Path(temp_name).unlink(missing_ok=True)
        if error.errno in _DISK_FULL:
            full = OSError(f"{out}: the disk is full (no space left for the output; nothing was written there)")
            full.errno = error.errno
            raise full from None
        raise
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: The signals that end a process politely, besides SIGINT (which Python turns into KeyboardInterrupt).
_INTERRUPT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Signalled(BaseException):
    """Raised by our handler of an interrupt signal, so that the write unwinds and cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While the body runs, SIGTERM and SIGHUP raise :class:`_Signalled`; the handlers before come back after.

    Only in the main thread (the only one Python delivers signals to, and the only one that may
    set handlers); a signal that is ignored (``nohup`` ignores SIGHUP) or handled outside Python
    is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise _Signalled(signum)

    previous = {}
    try:
        for signum in _INTERRUPT_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is signal.SIG_IGN or handler is None:
                continue
            previous[signum] = signal.signal(signum, interrupt)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _output_mode(out: Path) -> int:
    """The permissions of the file replaced at ``out``; for a new file, those the umask gives.

    (mkstemp makes the temporary file 0600.)
    """
    try:
        existing = out.stat()
    except OSError:
        existing = None
    if existing is not None and stat.S_ISREG(existing.st_mode):
        return stat.S_IMODE(existing.st_mode)
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask: Linux shows it in /proc/self/status; elsewhere it is set and put back."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # A file another thread creates in between gets 0o077: private rather than open to all.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _encoded_blocks(tensor: OutputTensor) -> Iterator[np.ndarray]:
    """The tensor's bytes in the file, block by block of whole rows."""
    if tensor.raw:
        yield from tensor.record.iter_rows(BLOCK_BYTES, np.dtype(np.uint8))
        return
    numpy_type = _NUMPY_TYPES.get(tensor.type)
    if numpy_type is not None:
        for block in tensor.record.iter_rows(BLOCK_BYTES, numpy_type):
            yield block.astype(numpy_type, copy=False)
        return
    from .._native import core  # the engine, only when quantizing

    row_length = tensor.spec.shape[-1]
    for block in tensor.record.iter_rows(BLOCK_BYTES, np.dtype(np.float32)):
        yield core.quantize_rows(int(tensor.type), block.reshape(-1, row_length))


def _add_metadata(
    writer: gguf.GGUFWriter, hparams: GptjHparams, tokenizer: TokenizerData, file_type: gguf.LlamaFileType
) -> None:
    writer.add_name(hparams.name)
    writer.add_file_type(int(file_type))
    writer.add_context_length(hparams.n_positions)
    writer.add_embedding_length(hparams.n_embd)
    writer.add_feed_forward_length(hparams.n_inner)
    writer.add_block_count(hparams.n_layer)
    writer.add_head_count(hparams.n_head)
    writer.add_rope_dimension_count(hparams.rotary_dim)
    writer.add_layer_norm_eps(hparams.layer_norm_epsilon)
    writer.add_vocab_size(hparams.vocab_size)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokenizer.tokens)
    writer.add_token_types(tokenizer.token_types)
    writer.add_token_merges(tokenizer.merges)
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
