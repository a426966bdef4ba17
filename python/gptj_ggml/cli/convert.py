"""``gptj-ggml convert``: a Hugging Face GPT-J checkpoint folder (or a legacy GGML file) -> one GGUF file."""

from __future__ import annotations

import argparse

from ..chat_templates import TEMPLATES
from ..convert.quant_types import OUTTYPES


def add_convert(subparsers: argparse._SubParsersAction) -> None:
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
    parser.add_argument(
        "--chat-template",
        metavar="NAME|FILE",
        default=None,
        help=f"store this chat template in the file (named: {', '.join(TEMPLATES)}; or a file of Jinja source) "
        "instead of the checkpoint's own (tokenizer_config.json's chat_template, copied when it has one)",
    )
    parser.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint

    out = convert_checkpoint(
        args.src, args.output, outtype=args.outtype, pure=args.pure, progress=True, chat_template=args.chat_template
    )
    print(f"wrote {out}")
    return 0
