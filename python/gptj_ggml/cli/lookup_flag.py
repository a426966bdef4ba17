"""``--lookup N``: prompt lookup speculative decoding, the flag ``run`` and ``serve`` share."""

from __future__ import annotations

import argparse

from .. import _checks
from ..speculation.prompt_lookup import MAX_DRAFT


def add_lookup_flag(parser: argparse.ArgumentParser, note: str = "") -> None:
    """Add ``--lookup N`` (default 0: off); ``note`` ends its help (what the value applies to)."""
    parser.add_argument(
        "--lookup",
        type=int,
        default=0,
        metavar="N",
        help=f"prompt lookup speculative decoding: guess up to N tokens per step (1 to {MAX_DRAFT}), those that "
        "followed the latest earlier occurrence of the last few tokens (in the prompt or the text so far), and "
        "check them in one evaluation; the output is unchanged (greedy and seeded alike), only faster where "
        f"the text repeats what came before{note} (default 0: off)",
    )


def lookup_from_args(args: argparse.Namespace) -> int:
    """The ``--lookup`` value, checked (ValueError naming the flag)."""
    return _checks.integer("--lookup", args.lookup, minimum=0, maximum=MAX_DRAFT)
