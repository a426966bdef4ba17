"""The ``gptj-ggml`` command line: one module per sub-command, and the table of them.

To add a sub-command, write ``cli/<name>.py`` with ``add_<name>(subparsers)``, which registers
its arguments and sets ``handler`` to a function ``(args) -> int``, and list it in ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import GptjError
from .bench import add_bench
from .convert import add_convert
from .info import add_info
from .perplexity import add_perplexity
from .quantize import add_quantize
from .run import add_run
from .serve import add_serve

_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_convert,
    add_quantize,
    add_info,
    add_run,
    add_bench,
    add_perplexity,
    add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="gptj-ggml", description="Local GPT-J inference on the CPU with ggml.")
    parser.add_argument("--version", action="version", version=f"gptj-ggml {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_subcommand in _SUBCOMMANDS:
        add_subcommand(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code (errors: one line on stderr, code 1)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): end quietly with the code of a tool that
        # SIGPIPE ended (128 + 13). stdout now leads to /dev/null, so the interpreter's final
        # flush cannot fail again. SIGPIPE itself stays ignored, as Python sets it: a server
        # must survive a client closing its socket.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (GptjError, OSError, ValueError) as error:
        # GptjError covers bad models and checkpoints; OSError a missing file; ValueError a
        # bad argument value. Each is one line for the user, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
