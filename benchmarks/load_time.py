"""Load time of a page-cached GPT-J-6B-shaped model: open (Model()) and open + first token.

    python benchmarks/load_time.py [--n-layer 28] [--reps 5] [--keep]

Writes a random-weight f16 GGUF with GPT-J-6B's shapes (12 GB at 28 layers) into a scratch
folder, reads it once so it is in the page cache, then times fresh processes: each imports
gptj_ggml, opens the model and evaluates one token. Prints medians and the peak RSS.
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
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "gptj-ggml-bench")
    parser.add_argument("--keep", action="store_true", help="keep the model file for the next run")
    args = parser.parse_args()

    args.scratch.mkdir(parents=True, exist_ok=True)
    path = args.scratch / f"random-gptj6b-{args.n_layer}l-f16.gguf"
    if not path.exists():
        write_random_gptj(path, args.n_layer, "f16")
    size_gib = path.stat().st_size / 2**30
    with open(path, "rb") as f:  # into the page cache
        while f.read(1 << 24):
            pass
    try:
        runs = [
            json.loads(subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True).stdout)
            for _ in range(args.reps)
        ]
    finally:
        if not args.keep:
            path.unlink()
    print(f"| model | file | open (median of {args.reps}) | open + first token | peak RSS |")
    print("|---|---|---|---|---|")
    print(
        f"| random GPT-J-6B shapes, {args.n_layer} layers, f16 | {size_gib:.2f} GiB | "
        f"{statistics.median(r['open'] for r in runs) * 1e3:.0f} ms | "
        f"{statistics.median(r['first_token'] for r in runs) * 1e3:.0f} ms | "
        f"{statistics.median(r['rss_mib'] for r in runs):.0f} MiB |"
    )


if __name__ == "__main__":
    main()
