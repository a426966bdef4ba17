"""``gptj-ggml quantize``: a GGUF (or legacy GGML) file -> a GGUF file of a smaller type."""

from __future__ import annotations

import argparse

from ..convert.quant_types import OUTTYPES


def add_quantize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a GGUF model to a smaller type",
        description="Write INPUT's weight matrices in TYPE (ggml's quantizers, on all cores, tensor by tensor). "
        "Norms and biases stay f32; output.weight is at least q6_K and token_embd q4_K for q2_K/q3_K unless "
        "--pure; a matrix whose rows do not fit TYPE's blocks falls back (listed in the file).",
    )
    parser.add_argument("input", help="the f32, f16 or bf16 .gguf file (or a legacy GGML .bin)")
    parser.add_argument("output", help="the .gguf file to write")
    parser.add_argument("type", choices=list(OUTTYPES), metavar="TYPE", help=f"one of: {', '.join(OUTTYPES)}")
    parser.add_argument("--pure", action="store_true", help="every matrix in TYPE, output and token_embd included")
    parser.set_defaults(handler=run_quantize)


def run_quantize(args: argparse.Namespace) -> int:
    from ..convert.quantize import quantize

    out = quantize(args.input, args.output, args.type, pure=args.pure, progress=True)
    print(f"wrote {out}")
    return 0
