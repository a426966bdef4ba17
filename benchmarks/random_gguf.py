"""Write random-weight GPT-J GGUF files of any shape straight from numpy (for benchmarks).

GPT-J-6B's real shapes (n_embd 4096, 16 heads, rotary 64, n_inner 16384, vocab 50400) with
fewer layers stand in for the real weights, which cannot be downloaded here. Tensors are
filled by repeating one random block, which costs the disk its full size but no time to draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptj_ggml.convert.gguf_output import OutputTensor, write_gguf
from gptj_ggml.convert.hparams import GptjHparams
from gptj_ggml.convert.quant_types import OUTTYPES, choose_type
from gptj_ggml.convert.tensor_names import expected_tensors
from gptj_ggml.convert.tokenizer_data import read_tokenizer

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "gptj-tokenizer"
GPTJ_6B = {"vocab_size": 50400, "n_positions": 2048, "n_embd": 4096, "n_head": 16, "rotary_dim": 64, "n_inner": 16384}

_BLOCK = np.random.default_rng(0).standard_normal(4 * 1024 * 1024).astype(np.float32) * 0.02


@dataclass
class _RandomRecord:
    """Duck-types convert.tensor_record.TensorRecord for write_gguf: rows of random values."""

    shape: tuple[int, ...]
    is_norm: bool

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))

    def iter_rows(self, max_bytes: int, out_dtype: np.dtype) -> Iterator[np.ndarray]:
        remaining = self.n_elements
        while remaining:
            n = min(remaining, _BLOCK.size)
            block = _BLOCK[:n] + 1.0 if self.is_norm else _BLOCK[:n]
            yield block.astype(out_dtype)
            remaining -= n


def six_b_shaped(folder: Path, n_layer: int, outtype: str) -> Path:
    """``folder/6b-{n_layer}l-{outtype}.gguf``, GPT-J-6B's shapes with n_layer layers, written if missing
    (benchmarks given the same ``--dir`` share the files)."""
    path = folder / f"6b-{n_layer}l-{outtype}.gguf"
    if not path.exists():
        write_random_gptj(path, n_layer, outtype)
    return path


def write_random_gptj(path: Path, n_layer: int, outtype: str = "f16", **shape: int) -> Path:
    """Write a random GPT-J GGUF of n_layer layers (GPT-J-6B's shapes unless overridden)."""
    dims = {**GPTJ_6B, **shape}
    hparams = GptjHparams(name=f"random-gptj-{n_layer}l", n_layer=n_layer, layer_norm_epsilon=1e-5, **dims)
    tokenizer = read_tokenizer(TOKENIZER_DIR, hparams.vocab_size)
    tensors = [
        OutputTensor(
            spec,
            _RandomRecord(spec.shape, spec.gguf_name.endswith("norm.weight")),
            choose_type(spec.gguf_name, spec.shape, outtype).type,
        )
        for spec in expected_tensors(hparams)
    ]
    write_gguf(Path(path), hparams, tokenizer, OUTTYPES[outtype].file_type, tensors)
    return Path(path)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--outtype", choices=sorted(OUTTYPES), default="f16")
    args = parser.parse_args()
    print(write_random_gptj(args.output, args.n_layer, args.outtype))
