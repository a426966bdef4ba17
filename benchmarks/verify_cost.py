"""What verifying k drafted tokens costs against a plain step, on GPT-J-6B's shapes.

A speculative step evaluates the step's token and k drafts in one graph (logits at each) and
samples up to k + 1 times; a plain step evaluates one token and samples once. On random weights
with GPT-J-6B's shapes (fewer layers; every layer costs the same, so the ratio carries to 28),
each round times both, k in alternating order, from the same position: the draft is the greedy
continuation itself, so every draft is accepted and every sample is paid. The table gives the
median ms, the ratio to k = 0 in the same rounds, and the most a step of k drafts can give
(k + 1 tokens for that cost). ``--json FILE`` writes the ratios for benchmarks/speculation.py.

    python benchmarks/verify_cost.py [--types q8_0,q4_0,f16] [--layers 4] [--k 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from random_gguf import six_b_shaped

from gptj_ggml import Model, SamplingParams
from gptj_ggml._native import core

GREEDY = SamplingParams(temperature=0)


def measure(path: Path, args: argparse.Namespace) -> dict[int, float]:
    model = Model(str(path))
    session = core.Session(model._model, n_ctx=args.context + 32, n_threads=args.threads)
    sampler = GREEDY.sampler(model.n_vocab, 0)
    prompt = list(range(1000, 1000 + args.context))
    continuation, pending = [], prompt
    for _ in range(args.k + 1):
        continuation.append(session.evaluate_and_sample(pending, sampler)[0])
        pending = [continuation[-1]]
    base = args.context - 1
    ks = list(range(args.k + 1))
    ms: dict[int, list[float]] = {k: [] for k in ks}
    accepted: dict[int, list[int]] = {k: [] for k in ks}
    for round_index in range(args.rounds + 1):  # round 0 warms the buffers for every size
        for k in ks if round_index % 2 == 0 else reversed(ks):
            for _ in range(args.steps):
                session.truncate(base)
                started = time.perf_counter()
                steps = session.evaluate_and_verify([prompt[-1]], continuation[:k], sampler)
                elapsed = (time.perf_counter() - started) * 1e3
                if round_index > 0:
                    ms[k].append(elapsed)
                    accepted[k].append(len(steps) - 1)
    medians = {k: statistics.median(ms[k]) for k in ks}
    print(
        f"\n{path.stem}: {model.n_layer} layers (GPT-J-6B's other shapes), position {args.context}, "
        f"{args.threads} threads, {args.rounds} rounds x {args.steps} steps, {platform.machine()} {_isa()}"
    )
    print("| k drafted | ms/step | vs plain step | tokens/step if all accepted | best speedup | drafts accepted |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k in ks:
        ratio = medians[k] / medians[0]
        print(
            f"| {k} | {medians[k]:.1f} | {ratio:.3f}x | {k + 1} | {(k + 1) / ratio:.2f}x | "
            f"{statistics.mean(accepted[k]):.1f} of {k} |"
        )
    return {k: medians[k] / medians[0] for k in ks}


def _isa() -> str:
    flags = (
        Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split()
        if Path("/proc/cpuinfo").exists()
        else []
    )
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", default="q8_0,q4_0,f16", help="weight types, comma-separated")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--k", type=int, default=8, help="the most drafted tokens measured")
    parser.add_argument("--context", type=int, default=256, help="the position the steps are measured at")
    parser.add_argument("--steps", type=int, default=3, help="steps per k per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="keep the model files here (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="write {type: {k: ratio}} here")
    args = parser.parse_args()
    ratios = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for outtype in args.types.split(","):
            path = six_b_shaped(folder, args.layers, outtype)
            ratios[outtype] = measure(path, args)
    if args.json is not None:
        args.json.write_text(json.dumps(ratios, indent=1))


if __name__ == "__main__":
    main()
