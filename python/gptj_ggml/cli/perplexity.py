"""``gptj-ggml perplexity``: perplexity on a text file, or KL divergence against a reference model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cache_flags import add_cache_flags, cache_options_from_args


def add_perplexity(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "perplexity",
        help="perplexity of a model on a text (or KL divergence against a reference model)",
        description="Cut the text's tokens into chunks of --ctx tokens, evaluate each from an empty context "
        "and score every token but the first: perplexity = exp(mean negative log-likelihood). With --kl-base, "
        "also evaluate that model and report KL(base || model) and top-1 agreement.",
    )
    parser.add_argument("model", help="the .gguf model file")
    parser.add_argument("-f", "--file", required=True, help="the text file (UTF-8)")
    parser.add_argument("--ctx", type=int, default=512, help="tokens per chunk (512)")
    parser.add_argument("--kl-base", default=None, help="a reference .gguf model (e.g. the f16 file)")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    add_cache_flags(parser)  # the model's; --kl-base keeps f16: the KL is then the cache type's
    parser.set_defaults(handler=run_perplexity)


def run_perplexity(args: argparse.Namespace) -> int:
    from ..model import Model
    from ..perplexity import kl_divergence, perplexity

    if args.ctx < 2:
        raise ValueError(f"--ctx must be at least 2, got {args.ctx}")
    text = _read_text(Path(args.file))
    model = Model(args.model, n_ctx=args.ctx, n_threads=args.threads, **cache_options_from_args(args))
    ids = model.tokenize(text)

    def report(done: int, total: int) -> None:
        print(f"\rchunk {done}/{total}", end="", file=sys.stderr, flush=True)

    if args.kl_base is None:
        result = perplexity(model, ids, args.ctx, on_chunk=report)
        print(file=sys.stderr)
        print(
            f"perplexity: {result.perplexity:.4f} ({result.n_scored} tokens scored in {result.n_chunks} chunks of {args.ctx})"
        )
        return 0
    base = Model(args.kl_base, n_ctx=args.ctx, n_threads=args.threads)
    kl = kl_divergence(model, base, ids, args.ctx, on_chunk=report)
    print(file=sys.stderr)
    print(f"perplexity: {kl.perplexity:.4f} (base: {kl.reference_perplexity:.4f}), {kl.n_scored} tokens scored")
    print(f"KL divergence from the base: mean {kl.mean_kl:.6f}, 99th percentile {kl.kl_p99:.6f}")
    print(f"top-1 agreement with the base: {100 * kl.top1_agreement:.2f}%")
    return 0


def _read_text(path: Path) -> str:
    """The text to score; errors name the file (Python's own name the errno or the codec)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (perplexity -f needs a UTF-8 text file)") from None
    except OSError as error:
        raise type(error)(f"{path}: cannot read the text for -f ({error.strerror or error})") from None
