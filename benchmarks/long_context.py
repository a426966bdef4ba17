"""How prompt and generation speed hold up as the context grows, on GPT-J-6B-shaped random weights.

    python benchmarks/long_context.py [--n-layer 4] [--types f16,q4_0] [--caches f16,q8_0] [--reps 3] [--threads N]
                                      [--no-prompts]

For each weight type and KV cache (--caches: f16 with plain attention, f16+fa with flash
attention, q8_0 or q4_0, which attend by flash attention; a "/ggml" suffix, e.g. q8_0/ggml, turns
our single-token attention kernel off, so that ggml's flash kernel runs every step: the baseline),
in fresh processes (types alternate within each repetition: this machine's memory bandwidth
drifts), prints prompt throughput at 128, 512 and 2048 tokens and generation
ms/token after 16 and after 1900 positions, with the ratios issue 16 asks for: pp512 / pp128
(tokens/s; at least 0.9) and gen@1900 / gen@16 (ms/token; at most 1.15). The two generation
positions are two sessions of one model whose steps alternate, and their ratio is the median of
the per-step ratios: measured in separate runs, drift alone moved it by 0.1.

Generation at a long position reads the cache as well as the weights: 2 x n_layer x positions x
n_embd f16 values per token (0.87 GB at 1900 positions for GPT-J-6B's 28 layers, against 12 GB of
f16 or 3.6 GB of q4_0 weights), so the floor of gen@1900 / gen@16 is 1 + cache bytes / weight bytes,
printed beside the measurement (a q8_0 cache reads 34/64 of f16's bytes, q4_0 18/64). Models are written once into --dir (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import weight_bytes_per_token
from random_gguf import six_b_shaped

PROMPTS = (128, 512, 2048)
POSITIONS = (16, 1900)
N_STEPS = 24

_CHILD = r"""
import json, sys, time
import numpy as np
from gptj_ggml import Model

path, threads, prompts, positions, n_steps = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3]), eval(sys.argv[4]), int(sys.argv[5])
cache_type, flash_attn, our_decode_attention = sys.argv[6], sys.argv[7] == "1", sys.argv[8] == "1"
from gptj_ggml import _core
_core.set_decode_attention_enabled(our_decode_attention)
model = Model(path, n_ctx=2048, n_threads=threads, cache_type=cache_type, flash_attn=flash_attn)
session = model.session()
rng = np.random.default_rng(0)
ids = [int(i) for i in rng.integers(0, 50000, size=2048)]
result = {}
session.evaluate(ids[:8])  # first touch of the weights, outside every timing
for n in prompts:
    session.reset()
    start = time.perf_counter()
    session.evaluate(ids[:n])
    result[f"pp{n}"] = n / (time.perf_counter() - start)
# The two positions' steps alternate, one session each, so drift in memory bandwidth hits both alike.
near, far = model.session(), model.session()
near.evaluate(ids[:positions[0]])
far.evaluate(ids[:positions[1]])
steps = {positions[0]: [], positions[1]: []}
for i in range(n_steps):
    for position, session in ((positions[0], near), (positions[1], far)):
        start = time.perf_counter()
        session.evaluate([ids[position + i]])
        steps[position].append(time.perf_counter() - start)
for position, times in steps.items():
    result[f"gen{position}"] = 1e3 * sorted(times)[len(times) // 2]
result["gen_ratio"] = sorted(b / a for a, b in zip(*steps.values()))[n_steps // 2]
print(json.dumps(result))
"""


#: --caches: (cache_type, flash_attn, our decode attention kernel) and the cache's bytes per value.
#: "/ggml": single tokens through ggml_flash_attn_ext instead of our kernel (the baseline).
CACHES = {
    "f16": ("f16", False, True, 2.0),
    "f16+fa": ("f16", True, True, 2.0),
    "q8_0": ("q8_0", True, True, 34 / 32),
    "q4_0": ("q4_0", True, True, 18 / 32),
    "f16+fa/ggml": ("f16", True, False, 2.0),
    "q8_0/ggml": ("q8_0", True, False, 34 / 32),
    "q4_0/ggml": ("q4_0", True, False, 18 / 32),
}


def measure(path: Path, threads: int, cache: str, prompts: tuple[int, ...]) -> dict[str, float]:
    cache_type, flash_attn, ours, _ = CACHES[cache]
    cmd = [sys.executable, "-c", _CHILD, str(path), str(threads), repr(prompts), repr(POSITIONS), str(N_STEPS)]
    cmd += [cache_type, str(int(flash_attn)), str(int(ours))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return json.loads(out[-1])


def cache_over_weights(path: Path, n_layer: int, position: int, bytes_per_value: float, n_embd: int = 4096) -> float:
    """Cache bytes (keys and values) read per token at `position` over the weight bytes read."""
    return 2 * n_layer * position * n_embd * bytes_per_value / weight_bytes_per_token(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--types", default="f16,q4_0")
    parser.add_argument("--caches", default="f16", help=f"comma-separated, of {', '.join(CACHES)}")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-prompts", action="store_true", help="generation only (no pp128 / pp512 / pp2048)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "gptj-ggml-bench")
    args = parser.parse_args()

    args.dir.mkdir(parents=True, exist_ok=True)
    caches = args.caches.split(",")
    if unknown := set(caches) - set(CACHES):
        parser.error(f"--caches: unknown {', '.join(sorted(unknown))} (known: {', '.join(CACHES)})")
    models = {t: six_b_shaped(args.dir, args.n_layer, t) for t in args.types.split(",")}
    configs = [(t, cache) for t in models for cache in caches]
    prompts = () if args.no_prompts else PROMPTS
    runs: dict[tuple[str, str], list[dict[str, float]]] = {config: [] for config in configs}
    for rep in range(args.reps):
        for t, cache in configs:
            runs[t, cache].append(measure(models[t], args.threads, cache, prompts))
            print(f"rep {rep + 1}/{args.reps} {t} cache {cache}: {runs[t, cache][-1]}", file=sys.stderr, flush=True)

    print(f"\n{args.n_layer} layers, GPT-J-6B's shapes, {args.threads} threads, medians of {args.reps} processes")
    header = ["type", "cache"] + [f"pp{n} tok/s" for n in prompts] + [f"gen@{p} ms" for p in POSITIONS]
    header += ["pp512/pp128", "pp2048/pp128"] if prompts else []
    header += ["gen@1900/gen@16", "floor (cache/weights)"]
    print(" | ".join(header))
    for t, cache in configs:
        med = {key: statistics.median(r[key] for r in runs[t, cache]) for key in runs[t, cache][0]}

        # The ratio of medians of paired runs would hide drift; the median of per-process ratios does not.
        def ratio(a: str, b: str, runs_of_type: list = runs[t, cache]) -> float:
            return statistics.median(r[a] / r[b] for r in runs_of_type)

        row = [t, cache] + [f"{med[f'pp{n}']:.1f}" for n in prompts] + [f"{med[f'gen{p}']:.1f}" for p in POSITIONS]
        row += [f"{ratio('pp512', 'pp128'):.2f}", f"{ratio('pp2048', 'pp128'):.2f}"] if prompts else []
        row += [
            f"{med['gen_ratio']:.2f}",
            f"{1 + cache_over_weights(models[t], args.n_layer, 1900, CACHES[cache][3]):.2f}",
        ]
        print(" | ".join(row))


if __name__ == "__main__":
    main()
