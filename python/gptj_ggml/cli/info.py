"""``gptj-ggml info``: describe a model file, or (``--system``) the ggml build in use."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .formatting import format_bytes, format_count

if TYPE_CHECKING:
    from ..info import ModelInfo, SystemInfo

# Metadata strings longer than this (a licence, a description) are cut in the listing.
_MAX_VALUE_CHARS = 100


def add_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a model file, or the ggml build and CPU (--system)",
        description="Print a GGUF model's architecture, hyper-parameters, weight types and sizes per tensor "
        "group, tokenizer and metadata; with --system, the ggml build in use and the CPU features it uses.",
    )
    parser.add_argument("model", nargs="?", help="the .gguf model file")
    parser.add_argument("--system", action="store_true", help="describe the ggml build, CPU and threads")
    parser.add_argument("--tensors", action="store_true", help="also list every tensor (name, type, shape, size)")
    parser.set_defaults(handler=run_info, parser=parser)


def run_info(args: argparse.Namespace) -> int:
    if args.model is None and not args.system:
        args.parser.error("give a MODEL file, --system, or both")
    from .. import info

    sections = []
    if args.system:
        sections.append(system_text(info.describe_system()))
    if args.model is not None:
        sections.append(model_text(info.describe_model(args.model), list_tensors=args.tensors))
    print("\n\n".join(sections))
    return 0


def _types_text(types: dict[str, int]) -> str:
    if len(types) == 1:
        return next(iter(types))
    return ", ".join(f"{name} x{count}" for name, count in sorted(types.items(), key=lambda item: -item[1]))


def model_text(model: ModelInfo, list_tensors: bool = False) -> str:
    lines = [
        f"file:          {model.path} ({format_bytes(model.file_size)})",
        f"architecture:  {model.architecture}"
        + (f" ({model.metadata['general.name']})" if "general.name" in model.metadata else ""),
        (
            f"parameters:    {format_count(model.n_params)}, matrices {model.weight_type}, "
            f"{format_bytes(model.weight_bytes)} of weights"
        ),
        "hyper-parameters:",
    ]
    lines += [
        f"  {name:<12} {value:g}" if isinstance(value, float) else f"  {name:<12} {value}"
        for name, value in model.hparams.items()
    ]

    lines += ["", f"{'tensor group':<14} {'tensors':>7}  {'type':<16} {'params':>10} {'size':>12}"]
    for group in model.groups:
        lines.append(
            f"{group.name:<14} {group.n_tensors:>7}  {_types_text(group.types):<16} "
            f"{format_count(group.n_params):>10} {format_bytes(group.n_bytes):>12}"
        )
    lines.append(
        f"{'total':<14} {len(model.tensors):>7}  {'':<16} {format_count(sum(t.n_elements for t in model.tensors)):>10} "
        f"{format_bytes(sum(t.n_bytes for t in model.tensors)):>12}"
    )

    if list_tensors:
        lines += ["", f"{'tensor':<28} {'type':<6} {'shape':<16} {'size':>12}"]
        lines += [
            f"{t.name:<28} {t.type:<6} {' x '.join(map(str, t.shape)):<16} {format_bytes(t.n_bytes):>12}"
            for t in model.tensors
        ]

    tokenizer = model.tokenizer
    merges = f"{tokenizer.n_merges} merges" if tokenizer.n_merges else "no merges stored (ranks from ids)"
    lines += [
        "",
        (
            f"tokenizer:     {tokenizer.model}, {tokenizer.n_tokens} tokens, bos {tokenizer.bos_id} {tokenizer.bos_text!r}, "
            f"eos {tokenizer.eos_id} {tokenizer.eos_text!r}, {merges}"
        ),
        "",
        "metadata:",
    ]
    width = max((len(key) for key in model.metadata), default=0)
    for key, value in model.metadata.items():
        text = repr(value) if isinstance(value, str) else f"{value:.7g}" if isinstance(value, float) else str(value)
        if len(text) > _MAX_VALUE_CHARS:
            text = text[: _MAX_VALUE_CHARS - 3] + "..."
        lines.append(f"  {key:<{width}} = {text}")
    return "\n".join(lines)


def system_text(system: SystemInfo) -> str:
    build = {
        "prebuilt wheel": f"libggml-python {system.libggml_python_version}, the prebuilt wheel from PyPI",
        "built from source": f"libggml-python {system.libggml_python_version}, built from source on this machine",
        "built in": "built from a ggml source tree into the extension (GPTJ_GGML_SOURCE_DIR)",
    }.get(system.ggml_build, f"libggml-python {system.libggml_python_version} (unknown build)")
    features = " ".join(name if value == "1" else f"{name}={value}" for name, value in system.ggml_features.items())
    lines = [
        f"ggml:          {system.ggml_version} (commit {system.ggml_commit})",
        f"build:         {build}",
        f"library:       {system.ggml_library}",
        f"ggml uses:     {features or '(no CPU features reported)'}",
        "matrix kernels: "
        + (
            "gptj_ggml's AVX2 (single tokens, decode batches, prompt batches"
            + (": 8-bit products for q4_0 / q4_K" if system.int8_gemm_avx2 else "")
            + (" (and q8_0) by AVX-VNNI" if system.int8_gemm_avx2 and system.int8_gemm_avx_vnni else "")
            + "); ggml's for repacked single tokens and decode batches"
            if system.prompt_kernel == "avx2"
            else f"gptj_ggml's {system.prompt_kernel.upper()}"
            + (" and AMX (bf16 tiles, for prompt batches)" if system.amx else "")
            + (
                " and AVX512-BF16 (bf16 pairs, for prompt batches of bf16 and quantized weights)"
                if system.bf16_gemm and not system.amx
                else ""
            )
            + (
                " and VNNI (8-bit dot products, q8_0 / q4_0 / k-quant single tokens and decode batches"
                + (", q8_0 / q4_0 / q4_K prompt batches" if system.vnni_gemm and not system.amx else "")
                + ")"
                if system.int8_vnni
                else ""
            )
            + "; ggml's for repacked single tokens"
            if system.prompt_kernel
            else "ggml's (this CPU has no AVX2 for gptj_ggml's kernels)"
        ),
        "attention:     "
        + (
            "gptj_ggml's AVX2 kernel for single tokens over a flash-attention cache (f16, q8_0, q4_0); "
            "ggml's for prompt batches and plain attention"
            if system.decode_attention
            else "ggml's"
        ),
    ]
    if system.isa_cap != "amx":
        lines.append(f"kernel cap:    GPTJ_GGML_ISA={system.isa_cap}: gptj_ggml's kernels use nothing above {system.isa_cap.upper()}")
    if system.missed_features:
        lines.append(
            f"CPU has, ggml does not use: {' '.join(system.missed_features)} "
            "(a native build uses them; see the README's Building section)"
        )
    lines += [
        f"CPU:           {system.cpu_name}",
        (
            f"cores:         {system.physical_cores} physical; default threads: up to {system.default_threads}, "
            "fewer while other processes keep the cores busy"
        ),
    ]
    return "\n".join(lines)
