"""Decoding several streams at once: total tokens/s and each stream's ms/token, 1 to 16 streams.

Each stream is a Session holding a prompt of ``--context`` tokens; every step decodes one greedy
token for every stream in one BatchEvaluator call (one graph: each weight read once for all
streams). Counts are measured in rounds, the order reversed each round (memory bandwidth here
drifts from minute to minute), and the table gives medians over all steps. ``single`` is the
plain one-session loop (Session.evaluate_and_sample), the baseline of the ratios.
``--matvec-max 7,16`` measures each count with each limit of the matrix-vector kernel (the
most tokens a product sends it; the GEMMs take longer batches), alternating, one table each.

    python benchmarks/batch_decode.py --types q8_0,q4_0 --layers 4 --steps 8 --rounds 3
    python benchmarks/batch_decode.py --types q8_0 --matvec-max 7,16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from random_gguf import six_b_shaped

from gptj_ggml import Model, SamplingParams
from gptj_ggml._native import core

GREEDY = SamplingParams(temperature=0)


class Streams:
    """n sessions with their prompts evaluated, decoding together."""

    def __init__(self, model: Model, evaluator: core.BatchEvaluator, n: int, context: int) -> None:
        self.sessions = [core.Session(model._model, n_ctx=2048, n_threads=evaluator.n_threads) for _ in range(n)]
        self.samplers = [GREEDY.sampler(model.n_vocab, 0) for _ in range(n)]
        self.evaluator = evaluator
        prompts = [[(1000 + 17 * i + j) % model.n_vocab for j in range(context)] for i in range(n)]
        self.pending = [r[0] for r in evaluator.evaluate_and_sample(self.items(prompts))]

    def items(self, tokens: list[list[int]]) -> list[tuple]:
        return [(s, t, sm, False, 0) for s, t, sm in zip(self.sessions, tokens, self.samplers)]

    def step(self) -> float:
        started = time.perf_counter()
        results = self.evaluator.evaluate_and_sample(self.items([[t] for t in self.pending]))
        self.pending = [r[0] for r in results]
        return (time.perf_counter() - started) * 1e3


def single_stream_ms(model: Model, n_threads: int, context: int, steps: int) -> list[float]:
    session = core.Session(model._model, n_ctx=2048, n_threads=n_threads)
    sampler = GREEDY.sampler(model.n_vocab, 0)
    token = session.evaluate_and_sample(list(range(1000, 1000 + context)), sampler)[0]
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        token = session.evaluate_and_sample([token], sampler)[0]
        times.append((time.perf_counter() - started) * 1e3)
    return times


def measure(path: Path, counts: list[int], args: argparse.Namespace) -> None:
    model = Model(str(path), repack=not args.no_repack)
    evaluator = core.BatchEvaluator(model._model, n_threads=args.threads, n_batch=512)
    streams = {n: Streams(model, evaluator, n, args.context) for n in counts}
    for s in streams.values():  # warm: first touches of the caches and compute buffers
        s.step()
    single_stream_ms(model, args.threads, args.context, 2)
    limits = [int(n) for n in args.matvec_max.split(",")]
    ms: dict[tuple[int, int], list[float]] = {(limit, n): [] for limit in limits for n in counts}
    single: list[float] = []
    for round_index in range(args.rounds):
        order = list(counts) if round_index % 2 == 0 else list(reversed(counts))
        core.set_matvec_max_tokens(max(limits))
        single += single_stream_ms(model, args.threads, args.context, args.steps)
        for n in order:
            for limit in limits if round_index % 2 == 0 else reversed(limits):
                core.set_matvec_max_tokens(limit)
                ms[limit, n] += [streams[n].step() for _ in range(args.steps)]
    core.set_matvec_max_tokens(16)
    base = statistics.median(single)
    for limit in limits:
        print(
            f"\n{path.stem}{' (not repacked)' if args.no_repack else ''}: {model.n_layer} layers, context {args.context}, {args.threads} threads, matvec up to "
            f"{limit} tokens, {args.rounds} rounds x {args.steps} steps; single session: {base:.1f} ms/token"
        )
        print("| streams | ms/step | per-stream ms/token vs single | total tokens/s | total vs single |")
        print("|---:|---:|---:|---:|---:|")
        for n in counts:
            step = statistics.median(ms[limit, n])
            print(f"| {n} | {step:.1f} | {step / base:.2f}x | {n / step * 1e3:.1f} | {n * base / step:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", default="q8_0,q4_0", help="weight types, comma-separated")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--streams", default="1,2,4,8,16")
    parser.add_argument("--context", type=int, default=64, help="prompt tokens each stream holds")
    parser.add_argument("--steps", type=int, default=8, help="steps per count per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--matvec-max", default="16", help="limits of the matrix-vector kernel to compare, e.g. 7,16")
    parser.add_argument("--no-repack", action="store_true", help="keep ggml's repackable matrices in the file layout")
    parser.add_argument("--amx-min", type=int, default=None, help="the fewest tokens a product sends to AMX")
    parser.add_argument("--dir", type=Path, default=None, help="keep the model files here (default: a temp folder)")
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]
    if args.amx_min is not None:
        core.set_amx_min_tokens(args.amx_min)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for outtype in args.types.split(","):
            path = six_b_shaped(folder, args.layers, outtype)
            measure(path, counts, args)


if __name__ == "__main__":
    main()
