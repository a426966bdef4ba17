"""Our kernels for single tokens and decode batches against a baseline, in the same engine.

    python benchmarks/decode_kernels.py MODEL.gguf [MODEL.gguf ...] [--baseline ggml|int8-off]
        [--tokens 1,4,8,16] [--reps 3] [--steps 30] [--threads 2] [--isa avx2]
        [--baseline-build DIR] [--bandwidth]

Each measurement is a fresh process that opens the model (repack=True, the default) and times
--steps evaluations of N tokens after a short prompt (median). The baselines:
- ggml: every product ggml_mul_mat (`set_batch_matmul_enabled(False)`);
- int8-off: our 8-bit VNNI kernels off (`set_int8_matvec_enabled(False)`): q8_0 takes the f32
  matrix-vector kernel, and q4_0 / q4_K are repacked at load for ggml's interleaved kernels, as
  before those kernels existed. The open time shows the repacking.
Ours and the baseline alternate, --reps times; the table gives medians and the median of the
per-pair ratios. Toggling kernels inside one process between steps is not a valid comparison:
each toggle rebuilt the graphs and a tiny model's step went from 3 to 17 ms. --isa sets
GPTJ_GGML_ISA. --baseline-build DIR runs the baseline from another build of the package (DIR holds
a gptj_ggml folder with its _core extension, e.g. a copy made before a kernel change) with our
kernels on: an A/B of two builds of the same kernels, alternating like the rest. --bandwidth runs
compare.py's read-bandwidth probe after each pair and gives, per model, the bytes of weights one
evaluation reads (every matrix but the embedding table) over our time, and that as a fraction of
the probe's median over the reps (issue 16's target 3). Medians over medians, not per-rep ratios:
the bus here has bursts of 1.5x lasting less than a rep, which land in one probe or one model run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import read_bandwidth_gbs, weight_bytes_per_token

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
print(json.dumps({"ms": 1e3 * statistics.median(times), "open_ms": 1e3 * opened, "repacked": model.repacked_bytes, "core": core.__file__}))
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
    parser.add_argument("--baseline-build", help="a folder holding another build's gptj_ggml: the baseline")
    parser.add_argument("--bandwidth", action="store_true", help="probe the read bandwidth after each pair")
    args = parser.parse_args()

    env = {**os.environ, **({"GPTJ_GGML_ISA": args.isa} if args.isa else {})}
    base_env, base_mode, base_label = env, args.baseline, args.baseline
    if args.baseline_build:
        base_env = {**env, "PYTHONPATH": os.pathsep.join([args.baseline_build, env.get("PYTHONPATH", "")])}
        base_mode, base_label = "ours", f"build {args.baseline_build}"
    rows = []
    for model in args.models:
        for n_tokens in (int(n) for n in args.tokens.split(",")):
            ours, base, probes = [], [], []
            for rep in range(args.reps):
                ours.append(measure(model, "ours", args.threads, args.steps, n_tokens, env))
                base.append(measure(model, base_mode, args.threads, args.steps, n_tokens, base_env))
                if args.bandwidth:
                    probes.append(read_bandwidth_gbs(args.threads))
                print(
                    f"{os.path.basename(model)} x{n_tokens} rep {rep + 1}: ours {ours[-1]['ms']:.1f} ms, "
                    f"{base_label} {base[-1]['ms']:.1f} ms",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append((model, n_tokens, ours, base, probes))
    print(f"ours from {rows[0][2][0]['core']}, baseline from {rows[0][3][0]['core']}", file=sys.stderr)

    print(
        f"\n{args.threads} threads, ISA cap {args.isa or '-'}, baseline {base_label}, "
        f"medians of {args.reps} processes each\n"
    )
    print(
        "| model | tokens | ours ms | baseline ms | baseline / ours | ours open ms | baseline open ms "
        "| baseline repacked MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model, n_tokens, ours, base, _ in rows:
        ratio = statistics.median(b["ms"] / o["ms"] for o, b in zip(ours, base))
        print(
            f"| {os.path.basename(model)} | {n_tokens} | {statistics.median(o['ms'] for o in ours):.1f} "
            f"| {statistics.median(b['ms'] for b in base):.1f} | {ratio:.2f}x "
            f"| {statistics.median(o['open_ms'] for o in ours):.0f} | {statistics.median(b['open_ms'] for b in base):.0f} "
            f"| {base[0]['repacked'] / 2**20:.0f} |"
        )
    if args.bandwidth:
        print(
            "\n| model | tokens | weights MB | ours GB/s | baseline GB/s | read probe GB/s | ours / probe | baseline / probe |"
        )
        print("|---|---|---|---|---|---|---|---|")
        weight_bytes = {model: weight_bytes_per_token(Path(model)) for model in args.models}
        for model, n_tokens, ours, base, probes in rows:
            weights = weight_bytes[model]
            ours_gbs = [weights / o["ms"] / 1e6 for o in ours]
            base_gbs = [weights / b["ms"] / 1e6 for b in base]
            print(
                f"| {os.path.basename(model)} | {n_tokens} | {weights / 1e6:.0f} | {statistics.median(ours_gbs):.1f} "
                f"| {statistics.median(base_gbs):.1f} | {statistics.median(probes):.1f} "
                f"| {statistics.median(ours_gbs) / statistics.median(probes):.0%} "
                f"| {statistics.median(base_gbs) / statistics.median(probes):.0%} |"
            )


if __name__ == "__main__":
    main()
