"""Size and quality of every quantized type against f16, on a random-weight GPT-J or a trained one.

Writes one f16 GGUF of a random GPT-J (fresh normal weights, spread like tests/checkpoints.py:
matrices and biases N(0, 0.05), norms 1 + N(0, 0.1)), quantizes it to every type with
``gptj_ggml.convert.quantize`` and prints a markdown table: file size, bits per weight (whole file,
over all parameters; at this size the two 50400-row matrices are most of the model, where
in GPT-J-6B they are 7%), the bits per weight of the layers' matrices, mean KL(f16 || type) and top-1 agreement with f16 over random token
ids, evaluated in chunks from an empty context (``gptj_ggml.perplexity.kl_divergence``).

``--trained [DIR]`` measures the small GPT-J that benchmarks/train_tiny.py trains on the standard
library's sources (its f16 GGUF in DIR, by default train_tiny's cache folder) on real text instead:
the held-out source files, which training never saw, with a perplexity column per type.

    python benchmarks/quant_quality.py [--n-embd 1024 --n-layer 4 --tokens 512 --ctx 128] [--workdir DIR]
    python benchmarks/quant_quality.py --trained [DIR] [--tokens 8192 --ctx 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import train_tiny

from gptj_ggml import Model
from gptj_ggml.convert.gguf_output import OutputTensor, write_gguf
from gptj_ggml.convert.hparams import GptjHparams
from gptj_ggml.convert.quant_types import OUTTYPES, bits_per_weight, choose_type
from gptj_ggml.convert.quantize import quantize
from gptj_ggml.convert.tensor_names import expected_tensors
from gptj_ggml.convert.tokenizer_data import read_tokenizer
from gptj_ggml.perplexity import kl_divergence

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "gptj-tokenizer"
TYPES = ["bf16", "q8_0", "q6_K", "q5_K", "q5_1", "q5_0", "q4_K", "q4_1", "q4_0", "iq4_nl", "q3_K", "q2_K"]


@dataclass
class _RandomRecord:
    """Duck-types TensorRecord for write_gguf: fresh random rows, block by block."""

    shape: tuple[int, ...]
    is_norm: bool
    seed: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))

    def iter_rows(self, max_bytes: int, out_dtype: np.dtype):
        rng = np.random.default_rng(self.seed)
        if len(self.shape) == 1:
            values = rng.standard_normal(self.shape, dtype=np.float32)
            yield (1.0 + 0.1 * values if self.is_norm else 0.05 * values).astype(out_dtype)
            return
        rows_per_block = max(1, max_bytes // (4 * self.shape[1]))
        for first in range(0, self.shape[0], rows_per_block):
            n = min(rows_per_block, self.shape[0] - first)
            yield (0.05 * rng.standard_normal((n, self.shape[1]), dtype=np.float32)).astype(out_dtype)


def write_random_f16(path: Path, n_embd: int, n_layer: int) -> Path:
    hparams = GptjHparams(
        name=f"random-gptj-{n_embd}x{n_layer}", vocab_size=50400, n_positions=2048, n_embd=n_embd,
        n_layer=n_layer, n_head=n_embd // 64, rotary_dim=32, n_inner=4 * n_embd, layer_norm_epsilon=1e-5,
    )  # fmt: skip
    tensors = [
        OutputTensor(
            spec,
            _RandomRecord(spec.shape, "norm.weight" in spec.gguf_name, seed),
            choose_type(spec.gguf_name, spec.shape, "f16").type,
        )
        for seed, spec in enumerate(expected_tensors(hparams))
    ]
    write_gguf(path, hparams, read_tokenizer(TOKENIZER_DIR, 50400), OUTTYPES["f16"].file_type, tensors)
    return path


class _CachedLogits:
    """The reference model for kl_divergence, evaluated once: every type is compared on the same chunks."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.n_vocab, self.n_ctx = model.n_vocab, model.n_ctx
        self._logits: dict[tuple[int, ...], np.ndarray] = {}

    def logits(self, ids: list[int]) -> np.ndarray:
        key = tuple(ids)
        if key not in self._logits:
            self._logits[key] = self.model.logits(ids)
        return self._logits[key]


def held_out_ids(n_tokens: int) -> list[int]:
    """The first ``n_tokens`` of train_tiny's held-out files (source files its training never saw)."""
    _, held_out = train_tiny.stdlib_split()
    return train_tiny.token_stream(train_tiny.load_tokenizer(), held_out)[:n_tokens].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-embd", type=int, default=1024, help="random model's width")
    parser.add_argument("--n-layer", type=int, default=4, help="random model's layers")
    parser.add_argument("--tokens", type=int, default=None, help="tokens scored (default: 512 random, 8192 trained)")
    parser.add_argument("--ctx", type=int, default=None, help="chunk size (default: 128 random, the model's trained)")
    parser.add_argument(
        "--trained", type=Path, nargs="?", const=train_tiny.default_out(), default=None, metavar="DIR",
        help=f"the model train_tiny.py wrote to DIR (default {train_tiny.default_out()}) on held-out text",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        folder = Path(workdir)
        if args.trained is None:
            n_tokens, n_ctx = args.tokens or 512, args.ctx or 128
            f16 = write_random_f16(folder / "f16.gguf", args.n_embd, args.n_layer)
            reference = Model(f16, n_ctx=n_ctx)
            ids = np.random.default_rng(0).integers(0, 50257, n_tokens).tolist()
            print(f"random GPT-J: n_embd {args.n_embd}, {args.n_layer} layers, {reference._model.n_params / 1e6:.1f} M "
                  f"parameters; {n_tokens} random tokens in chunks of {n_ctx}", file=sys.stderr)  # fmt: skip
        else:
            f16 = train_tiny.gguf_path(args.trained)
            if not f16.is_file():
                command = "python benchmarks/train_tiny.py"
                if args.trained != train_tiny.default_out():
                    command += f" --out {args.trained}"
                sys.exit(f"error: no trained model at {f16}; make it with `{command}` (about 15 minutes)")
            reference = Model(f16, n_ctx=args.ctx)  # None: the context it was trained with
            n_tokens, n_ctx = args.tokens or 8192, reference.n_ctx
            ids = held_out_ids(n_tokens)
            print(
                f"trained GPT-J {f16}: n_embd {reference.n_embd}, {reference.n_layer} layers, "
                f"{reference._model.n_params / 1e6:.1f} M parameters; {len(ids)} held-out tokens in chunks of {n_ctx}",
                file=sys.stderr,
            )
        print_table(f16, reference, ids, n_ctx, folder, with_perplexity=args.trained is not None)


def print_table(f16: Path, reference: Model, ids: list[int], n_ctx: int, folder: Path, with_perplexity: bool) -> None:
    """Quantize ``f16`` to each type in ``folder`` and print one markdown row per type as it is measured."""
    n_params = reference._model.n_params
    cached = _CachedLogits(reference)
    # Random tokens under random weights have a perplexity near the vocabulary's size: no column then.
    perplexity_column = " perplexity |" if with_perplexity else ""
    print(
        "| type | file size | bits/weight (file) | bits/weight (layer matrices) | mean KL vs f16 | top-1 agreement |"
        f"{perplexity_column} quantize time |"
    )
    print("|---" * (7 + with_perplexity) + "|")
    size = f16.stat().st_size
    f16_perplexity = ""
    if with_perplexity:  # f16 against itself: evaluates each chunk once, and fills the cache
        f16_perplexity = f" {kl_divergence(cached, cached, ids, n_ctx).perplexity:.3f} |"
    print(f"| f16 | {size / 2**20:.1f} MiB | {8 * size / n_params:.2f} | 16 | 0 | 100% |{f16_perplexity} |", flush=True)
    for outtype in TYPES:
        start = time.perf_counter()
        path = quantize(f16, folder / f"{outtype}.gguf", outtype)
        seconds = time.perf_counter() - start
        kl = kl_divergence(Model(path, n_ctx=n_ctx), cached, ids, n_ctx)
        size = path.stat().st_size
        matrix_bits = bits_per_weight(OUTTYPES[outtype].type)
        perplexity = f" {kl.perplexity:.3f} |" if with_perplexity else ""
        print(
            f"| {outtype} | {size / 2**20:.1f} MiB | {8 * size / n_params:.2f} | {matrix_bits:.4g} | "
            f"{kl.mean_kl:.5f} | {100 * kl.top1_agreement:.1f}% |{perplexity} {seconds:.1f} s |",
            flush=True,
        )
        path.unlink()


if __name__ == "__main__":
    main()
