"""Prompt throughput with our GEMM (whichever this CPU runs: batch_matmul_kernel()) against ggml's
products (set_batch_matmul_enabled(False)), on random GPT-J-6B-shaped GGUF files.

    python benchmarks/prompt_kernels.py [--dir /tmp/bench] [--layers 4] [--types f16,q8_0,q4_0,q4_K]
                                        [--prompts 128,512] [--reps 3] [--threads 2] [--cpu-time]
                                        [--no-repack]

The two alternate within each repetition (A B A B: the machine's speed drifts, and other work may
share its cores); each prints the median tokens/s and ours / ggml's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from random_gguf import six_b_shaped

from gptj_ggml import Model
from gptj_ggml._native import core


def prompt_seconds(model: Model, ids: list[int], ours: bool, clock=time.perf_counter) -> float:
    core.set_batch_matmul_enabled(ours)
    session = model.session()  # a fresh graph: the switch applies to graphs built afterwards
    start = clock()
    session.evaluate(ids)
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--types", default="f16,q8_0,q4_0,q4_K")
    parser.add_argument("--prompts", default="128,512")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-repack", action="store_true", help="keep ggml from repacking q4_0/q4_K (its kernels then read the file's layout)"
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, timed by its CPU time (steadier than wall time while other work shares the cores)",
    )
    args = parser.parse_args()
    if args.cpu_time:
        args.threads = 1
    clock = time.thread_time if args.cpu_time else time.perf_counter
    print(f"kernel: {core.batch_matmul_kernel() or 'none'}; {args.layers} layers, {args.threads} threads, "
          f"{'CPU' if args.cpu_time else 'wall'} time, median of {args.reps}{', no repacking' if args.no_repack else ''}")
    print(f"{'type':<6} {'prompt':>6} {'ours tok/s':>11} {'ggml tok/s':>11} {'ours/ggml':>10}")
    for outtype in args.types.split(","):
        model = Model(six_b_shaped(args.dir, args.layers, outtype), n_threads=args.threads, n_ctx=1024, n_batch=512,
                      repack=not args.no_repack)
        for n_tokens in map(int, args.prompts.split(",")):
            ids = np.random.default_rng(n_tokens).integers(0, 50400, n_tokens).tolist()
            prompt_seconds(model, ids, True, clock)  # warm-up: weights paged in
            times = {True: [], False: []}
            for _ in range(args.reps):
                for ours in (True, False):
                    times[ours].append(prompt_seconds(model, ids, ours, clock))
            ours_s, ggml_s = statistics.median(times[True]), statistics.median(times[False])
            print(f"{outtype:<6} {n_tokens:>6} {n_tokens / ours_s:>11.1f} {n_tokens / ggml_s:>11.1f} "
                  f"{ggml_s / ours_s:>9.2f}x", flush=True)
    core.set_batch_matmul_enabled(True)


if __name__ == "__main__":
    main()
