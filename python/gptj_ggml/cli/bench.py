"""``gptj-ggml bench``: prompt and generation tokens/s with their spread, as llama-bench prints them."""

from __future__ import annotations

import argparse
import json
import sys

from .cache_flags import add_cache_flags, cache_options_from_args
from .formatting import busy_cores_warning, format_bytes, format_count


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure prompt and generation tokens/s",
        description="Measure prompt-processing tokens/s (random token ids evaluated from an empty cache) and "
        "generation tokens/s (greedy, one token at a time), each repeated and reported as mean ± standard "
        "deviation. Times are the engine's own, without Python's overhead; each thread count is warmed up once.",
    )
    parser.add_argument("model", help="the .gguf model file")
    parser.add_argument(
        "-p",
        "--n-prompt",
        type=_int_list,
        default=[512],
        metavar="N,...",
        help="prompt lengths to test, comma-separated; 0 skips (512)",
    )
    parser.add_argument(
        "-n",
        "--n-gen",
        type=_int_list,
        default=[128],
        metavar="N,...",
        help="numbers of tokens to generate, comma-separated; 0 skips (128)",
    )
    parser.add_argument(
        "-t",
        "--threads",
        type=_int_list,
        default=[0],
        metavar="N,...",
        help="thread counts, comma-separated (default: physical cores)",
    )
    parser.add_argument("-r", "--reps", type=int, default=5, help="repetitions of each test (5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random prompt ids (0)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    add_cache_flags(parser)
    parser.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from .. import info
    from .._native import core
    from ..bench import run_bench
    from ..model import Model

    if args.reps < 1:
        raise ValueError(f"--reps must be >= 1, got {args.reps}")
    model = Model(args.model, **cache_options_from_args(args))
    description = info.describe_model(args.model)
    n_cores = core.physical_core_count()
    for n_threads in sorted(set(args.threads)):
        warning = busy_cores_warning(n_threads or n_cores, n_cores)
        if warning:
            print(warning, file=sys.stderr)
            break
    results = run_bench(
        model, n_prompt=args.n_prompt, n_gen=args.n_gen, threads=args.threads, repetitions=args.reps, seed=args.seed
    )
    if args.json:
        system = info.describe_system()
        document = {
            "model": {
                "path": description.path,
                "type": description.weight_type,
                "file_size": description.file_size,
                "n_params": description.n_params,
                "n_layer": description.hparams["n_layer"],
                "n_embd": description.hparams["n_embd"],
            },
            "cache": {"type": model.cache_type, "flash_attn": model.flash_attn},
            "system": {
                "ggml_version": system.ggml_version,
                "ggml_commit": system.ggml_commit,
                "ggml_build": system.ggml_build,
                "ggml_features": sorted(system.ggml_features),
                "cpu": system.cpu_name,
                "physical_cores": system.physical_cores,
            },
            "results": [
                {
                    "test": r.test,
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "n_threads": r.n_threads,
                    "repetitions": len(r.samples_ms),
                    "samples_ms": r.samples_ms,
                    "tokens_per_s_mean": r.mean,
                    "tokens_per_s_stdev": r.stdev,
                }
                for r in results
            ],
        }
        print(json.dumps(document, indent=2))
        return 0

    # Rows are printed as each test finishes: a real model's runs take minutes.
    name = description.metadata.get("general.name") or description.path
    size, params = format_bytes(description.file_size), format_count(description.n_params)
    cache = model.cache_type + (" fa" if model.flash_attn else "")  # llama-bench's type_k and fa columns, in one
    print("| model | size | params | type | cache | threads | test | t/s |")
    print("| --- | ---: | ---: | --- | --- | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {name} | {size} | {params} | {description.weight_type} | {cache} | {r.n_threads} | {r.test} "
            f"| {r.mean:.2f} ± {r.stdev:.2f} |"
        )
        sys.stdout.flush()
    return 0
