"""Load time of a page-cached GPT-J-6B-shaped model: open (Model()) and open + first token.

    python benchmarks/load_time.py [--n-layer 28] [--outtype f16] [--reps 5] [--keep] [--int8-off]

Writes a random-weight GGUF with GPT-J-6B's shapes (f16: 12 GB at 28 layers; q4_0: 3.3 GB)
into a scratch folder, reads it once so it is in the page cache, then times fresh processes:
each imports gptj_ggml, opens the model (repack=True, the default) and evaluates one token.
Prints medians and the peak RSS. --int8-off adds a row with our 8-bit kernels off, timed
alternately: q4_0 and q4_K are then repacked for ggml's kernels at load, as before those
kernels ran single tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_gguf import write_random_gptj

_CHILD = r"""
import json, sys, time
from gptj_ggml import Model
from gptj_ggml._native import core
core.set_int8_matvec_enabled(sys.argv[2] == "on")
start = time.perf_counter()
model = Model(sys.argv[1], n_ctx=512)
opened = time.perf_counter()
model.logits([50256])
first = time.perf_counter()
print(json.dumps({"open": opened - start, "first_token": first - start,
                  "rss_mib": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-layer", type=int, default=28)
    parser.add_argument("--outtype", default="f16")
    parser.add_argument("--int8-off", action="store_true", help="also time with the 8-bit kernels off (repacking)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "gptj-ggml-bench")
    parser.add_argument("--keep", action="store_true", help="keep the model file for the next run")
    args = parser.parse_args()

    args.scratch.mkdir(parents=True, exist_ok=True)
    path = args.scratch / f"random-gptj6b-{args.n_layer}l-{args.outtype}.gguf"
    if not path.exists():
        write_random_gptj(path, args.n_layer, args.outtype)
    size_gib = path.stat().st_size / 2**30
    with open(path, "rb") as f:  # into the page cache
        while f.read(1 << 24):
            pass
    modes = ["on", "off"] if args.int8_off else ["on"]
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    try:
        for _ in range(args.reps):
            for mode in modes:
                cmd = [sys.executable, "-c", _CHILD, str(path), mode]
                runs[mode].append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
    finally:
        if not args.keep:
            path.unlink()
    print(f"| model | 8-bit kernels | file | open (median of {args.reps}) | open + first token | peak RSS |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        print(
            f"| random GPT-J-6B shapes, {args.n_layer} layers, {args.outtype} | {mode} | {size_gib:.2f} GiB | "
            f"{statistics.median(r['open'] for r in runs[mode]) * 1e3:.0f} ms | "
            f"{statistics.median(r['first_token'] for r in runs[mode]) * 1e3:.0f} ms | "
            f"{statistics.median(r['rss_mib'] for r in runs[mode]):.0f} MiB |"
        )


if __name__ == "__main__":
    main()
