"""Our kernels for single tokens and decode batches against a baseline, in the same engine.

    python benchmarks/decode_kernels.py MODEL.gguf [MODEL.gguf ...] [--baseline ggml|int8-off]
        [--tokens 1,4,8,16] [--reps 3] [--steps 30] [--threads 2] [--isa avx2]

Each measurement is a fresh process that opens the model (repack=True, the default) and times
--steps evaluations of N tokens after a short prompt (median). The baselines:
- ggml: every product ggml_mul_mat (`set_batch_matmul_enabled(False)`);
- int8-off: our 8-bit VNNI kernels off (`set_int8_matvec_enabled(False)`): q8_0 takes the f32
  matrix-vector kernel, and q4_0 / q4_K are repacked at load for ggml's interleaved kernels, as
  before those kernels existed. The open time shows the repacking.
Ours and the baseline alternate, --reps times; the table gives medians and the median of the
per-pair ratios. Toggling kernels inside one process between steps is not a valid comparison:
each toggle rebuilt the graphs and a tiny model's step went from 3 to 17 ms. --isa sets
GPTJ_GGML_ISA.
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
path, mode, threads, steps, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
core.set_batch_matmul_enabled(mode != "ggml")
core.set_int8_matvec_enabled(mode != "int8-off")
start = time.perf_counter()
model = Model(path, n_ctx=1024, n_threads=threads)
opened = time.perf_counter() - start
session = model.session()
session.evaluate([1, 2, 3])
times = []
for i in range(steps):
    ids = list(range(100 + n * i, 100 + n * (i + 1)))
    start = time.perf_counter()
    session._core.evaluate(ids, False)
    times.append(time.perf_counter() - start)
print(json.dumps({"ms": 1e3 * statistics.median(times), "open_ms": 1e3 * opened, "repacked": model.repacked_bytes}))
"""


def measure(model: str, mode: str, threads: int, steps: int, n_tokens: int, env: dict) -> dict:
    cmd = [sys.executable, "-c", _CHILD, model, mode, str(threads), str(steps), str(n_tokens)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()
    return json.loads(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--baseline", choices=["ggml", "int8-off"], default="ggml")
    parser.add_argument("--tokens", default="1", help="tokens per evaluation, comma-separated (1: generation)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--isa", help="GPTJ_GGML_ISA for the children (avx2, avx512, avx512bf16, amx)")
    args = parser.parse_args()

    env = {**os.environ, **({"GPTJ_GGML_ISA": args.isa} if args.isa else {})}
    rows = []
    for model in args.models:
        for n_tokens in (int(n) for n in args.tokens.split(",")):
            ours, base = [], []
            for rep in range(args.reps):
                ours.append(measure(model, "ours", args.threads, args.steps, n_tokens, env))
                base.append(measure(model, args.baseline, args.threads, args.steps, n_tokens, env))
                print(
                    f"{os.path.basename(model)} x{n_tokens} rep {rep + 1}: ours {ours[-1]['ms']:.1f} ms, "
                    f"{args.baseline} {base[-1]['ms']:.1f} ms",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append((model, n_tokens, ours, base))

    print(
        f"\n{args.threads} threads, ISA cap {args.isa or '-'}, baseline {args.baseline}, "
        f"medians of {args.reps} processes each\n"
    )
    print(
        "| model | tokens | ours ms | baseline ms | baseline / ours | ours open ms | baseline open ms "
        "| baseline repacked MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model, n_tokens, ours, base in rows:
        ratio = statistics.median(b["ms"] / o["ms"] for o, b in zip(ours, base))
        print(
            f"| {os.path.basename(model)} | {n_tokens} | {statistics.median(o['ms'] for o in ours):.1f} "
            f"| {statistics.median(b['ms'] for b in base):.1f} | {ratio:.2f}x "
            f"| {statistics.median(o['open_ms'] for o in ours):.0f} | {statistics.median(b['open_ms'] for b in base):.0f} "
            f"| {base[0]['repacked'] / 2**20:.0f} |"
        )


if __name__ == "__main__":
    main()
