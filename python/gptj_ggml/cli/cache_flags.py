"""``--cache-type`` and ``--flash-attn``: how sessions store keys and values, the flags ``run``,
``serve``, ``bench`` and ``perplexity`` share (llama.cpp's ``-ctk``/``-ctv`` and ``-fa``)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import _checks


def add_cache_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-type",
        choices=_checks.CACHE_TYPES,
        default="f16",
        help="how the KV cache stores attention keys and values: f16 (the default), q8_0 or q4_0 (about 1/2 or "
        "1/4 of the memory and of what each token reads at long contexts, for a small change of the logits: "
        "README, 'KV cache types'); the quantized types turn on --flash-attn",
    )
    parser.add_argument(
        "--flash-attn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flash attention (online softmax over untransposed values: ggml's kernel for prompts, ours for "
        "single tokens) instead of two matrix products (default: on exactly with a quantized --cache-type)",
    )


def cache_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``Model``'s ``cache_type`` and ``flash_attn`` from the flags, checked (ValueError naming them)."""
    try:
        cache_type, flash_attn = _checks.cache_layout(args.cache_type, args.flash_attn)
    except ValueError as error:
        raise ValueError(f"--cache-type {args.cache_type} needs --flash-attn (not --no-flash-attn)") from error
    return {"cache_type": cache_type, "flash_attn": flash_attn}
