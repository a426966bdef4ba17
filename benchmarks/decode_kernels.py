"""Our single-token kernels against ggml's, in the same engine, on one model.

    python benchmarks/decode_kernels.py MODEL.gguf [--reps 3] [--steps 40] [--threads 2] [--isa avx2]

Each measurement is a fresh process timing --steps single-token evaluations (median) with our
kernels on, or off (`set_batch_matmul_enabled(False)`: every product ggml_mul_mat); the two
alternate, --reps times, and the table gives each run and the median of the per-pair ratios.
Toggling the kernels inside one process between steps is not a valid comparison: each toggle
rebuilt the graphs and a tiny model's step went from 3 to 17 ms. --isa sets GPTJ_GGML_ISA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import json, statistics, sys, time
from gptj_ggml import Model
from gptj_ggml._native import core
path, ours, threads, steps = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
core.set_batch_matmul_enabled(ours)
session = Model(path, n_ctx=256, n_threads=threads).session()
session.evaluate([1, 2, 3])
times = []
for i in range(steps):
    start = time.perf_counter()
    session.evaluate([100 + i])
    times.append(time.perf_counter() - start)
print(json.dumps({"ms": 1e3 * statistics.median(times)}))
"""


def step_ms(model: str, ours: bool, threads: int, steps: int, env: dict) -> float:
    cmd = [sys.executable, "-c", _CHILD, model, "1" if ours else "0", str(threads), str(steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()
    return json.loads(out[-1])["ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--isa", help="GPTJ_GGML_ISA for the children (avx2, avx512, avx512bf16, amx)")
    args = parser.parse_args()

    env = {**os.environ, **({"GPTJ_GGML_ISA": args.isa} if args.isa else {})}
    ours, ggml = [], []
    for rep in range(args.reps):
        ours.append(step_ms(args.model, True, args.threads, args.steps, env))
        ggml.append(step_ms(args.model, False, args.threads, args.steps, env))
        print(f"rep {rep + 1}: ours {ours[-1]:.2f} ms, ggml's {ggml[-1]:.2f} ms", file=sys.stderr, flush=True)
    ratio = statistics.median(g / o for o, g in zip(ours, ggml))
    print("| model | threads | ISA cap | ours ms/token | ggml's ms/token | ggml's / ours |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {os.path.basename(args.model)} | {args.threads} | {args.isa or '-'} | {statistics.median(ours):.2f} "
        f"| {statistics.median(ggml):.2f} | {ratio:.2f}x |"
    )


if __name__ == "__main__":
    main()
