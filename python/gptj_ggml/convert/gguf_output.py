"""Write a GPT-J GGUF file: metadata with llama.cpp's ``gptj`` keys, then tensors streamed in row blocks.

``GGUFWriter.add_tensor`` keeps every array in memory until the end, and
``write_tensor_data`` takes a whole tensor at once (token_embd alone is 825 MB in f32),
so tensors are declared with ``add_tensor_info`` and their data is written here block by
block, with the same alignment ``write_tensor_data`` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .hparams import GptjHparams
from .tensor_names import TensorSpec
from .tensor_record import TensorRecord
from .tokenizer_data import TokenizerData

ARCHITECTURE = "gptj"

# Source bytes read per block: large enough for fast sequential I/O, small enough that
# the converter's memory does not depend on the largest tensor.
BLOCK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class OutputTensor:
    """A tensor to write: its GGUF name and shape, where to read it, and its file dtype."""

    spec: TensorSpec
    record: TensorRecord
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return self.record.n_elements * self.dtype.itemsize


def write_gguf(
    path: Path,
    hparams: GptjHparams,
    tokenizer: TokenizerData,
    file_type: gguf.LlamaFileType,
    tensors: Sequence[OutputTensor],
    on_tensor_written: Callable[[OutputTensor], None] | None = None,
) -> None:
    """Write the whole GGUF file at ``path`` (which the caller makes atomic)."""
    writer = gguf.GGUFWriter(path, ARCHITECTURE)
    try:
        _add_metadata(writer, hparams, tokenizer, file_type)
        for tensor in tensors:
            writer.add_tensor_info(tensor.spec.gguf_name, tensor.spec.shape, tensor.dtype, tensor.nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None and len(writer.fout) == 1
        file = writer.fout[0]
        for tensor in tensors:
            writer.write_padding(file, file.tell())
            for block in tensor.record.iter_rows(BLOCK_BYTES, tensor.dtype):
                block.astype(tensor.dtype.newbyteorder("<"), copy=False).tofile(file)
            writer.write_padding(file, tensor.nbytes)
            if on_tensor_written is not None:
                on_tensor_written(tensor)
        writer.flush()
    finally:
        writer.close()


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
