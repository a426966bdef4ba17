"""The sampler's command-line flags, made from the sampling settings record (one flag per
setting: ``top_p`` is ``--top-p``), so a new setting needs no change here."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..sampling import SamplingParams

# Spellings people know from llama.cpp's tools, besides the record's own.
_ALIASES = {"temperature": ["--temp"]}


def add_sampling_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add a ``sampling`` group with one flag per sampling setting (default: the record's); return it."""
    group = parser.add_argument_group("sampling")
    try:
        from ..sampling import SETTINGS  # the record lives in the engine
    except ImportError:
        # A source tree without the built engine: convert (pure Python) still works; the commands
        # that need the engine fail when they run, naming the missing extension.
        return group
    for setting in SETTINGS:
        group.add_argument(
            f"--{setting.name.replace('_', '-')}",
            *_ALIASES.get(setting.name, []),
            dest=setting.name,
            type=setting.type,
            default=setting.default,
            metavar="N" if setting.type is int else "X",
            help=f"{setting.help} (default: %(default)s)",
        )
    return group


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    """The settings the flags give (ValueError naming one out of range)."""
    from ..sampling import SETTINGS, SamplingParams

    return SamplingParams(**{setting.name: getattr(args, setting.name) for setting in SETTINGS})
