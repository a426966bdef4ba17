"""The ``gptj-ggml`` command line: one sub-command per small function.

To add a sub-command, write ``_add_<name>(subparsers)`` that registers its arguments and
sets ``handler`` to a function ``(args) -> int``, and list it in ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..convert.quant_types import OUTTYPES
from ..errors import GptjError
from .bench import add_bench
from .info import add_info
from .perplexity import add_perplexity
from .quantize import add_quantize
from .run import add_run


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a Hugging Face GPT-J checkpoint folder (or a legacy GGML file) to GGUF",
        description="Convert a Hugging Face GPT-J checkpoint folder (safetensors or pytorch_model.bin, "
        "single or sharded, with its tokenizer files), or a legacy GGML file of ggml's examples/gpt-j, "
        "to one GGUF file.",
    )
    parser.add_argument("src", help="the checkpoint folder (config.json, weights, tokenizer files) or legacy .bin")
    parser.add_argument("-o", "--output", required=True, help="the GGUF file to write")
    parser.add_argument(
        "--outtype",
        choices=list(OUTTYPES),
        default=None,
        metavar="TYPE",
        help="type of the weight matrices: f16 (default for checkpoints; a legacy file keeps its types), "
        f"f32 (everything float32) or a quantized type ({', '.join(list(OUTTYPES)[2:])}); norms and biases stay f32",
    )
    parser.add_argument("--pure", action="store_true", help="quantized types: no higher-precision output/token_embd")
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint

    out = convert_checkpoint(args.src, args.output, outtype=args.outtype, pure=args.pure, progress=True)
    print(f"wrote {out}")
    return 0


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_convert,
    add_quantize,
    add_info,
    add_run,
    add_bench,
    add_perplexity,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="gptj-ggml", description="Local GPT-J inference on the CPU with ggml.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_subcommand in _SUBCOMMANDS:
        add_subcommand(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code (errors: one line on stderr, code 1)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (GptjError, OSError, ValueError) as error:
        # GptjError covers bad models and checkpoints; OSError a missing file; ValueError a
        # bad argument value. Each is one line for the user, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
