"""Threads on an idle and on a busy machine: 1 thread, all cores, and the adaptive default.

ggml's threads meet at a spinning barrier after every graph node. When another process keeps
a core busy, a thread without a core of its own holds the others at each barrier until the
scheduler runs it again. This script measures what that costs, and what the default thread
count (``n_threads=None``: up to the physical cores, fewer while they are busy) recovers.

For each model (the 4-layer tiny model of the README's first command, and GPT-J-6B's shapes
with a few layers) and each machine state (idle; one other process spinning on a core,
started by this script), it alternates the thread settings, ``--reps`` times each, and prints
the median ms/token of a greedy generation, with the ratio to 1 thread.

    python benchmarks/threads_busy.py --reps 3 --tokens 48
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from random_gguf import write_random_gptj

from gptj_ggml import Model
from gptj_ggml._native import core

SETTINGS = {"1 thread": 1, "all cores": core.physical_core_count(), "default": None}


def _spin(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        pass


@contextmanager
def busy_core(busy: bool) -> Iterator[None]:
    """One other process spinning on a core (as a browser or a build would), or nothing."""
    if not busy:
        yield
        return
    stop = multiprocessing.Event()
    spinner = multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
    spinner.start()
    time.sleep(0.2)  # let the scheduler settle it on a core
    try:
        yield
    finally:
        stop.set()
        spinner.join()


def ms_per_token(model: Model, n_threads: int | None, n_tokens: int) -> tuple[float, str]:
    session = model.session(n_threads=n_threads)
    generation = session.generate([50256, 464, 3290], max_tokens=n_tokens, temperature=0, ignore_eos=True)
    used = []
    for _ in generation:
        used.append(session.n_threads_last_used)
    counts = {n: used.count(n) for n in sorted(set(used))}
    return generation.timings.ms_per_token, ", ".join(f"{n} threads x{c}" for n, c in counts.items())


def measure(model: Model, busy: bool, reps: int, n_tokens: int) -> dict[str, tuple[float, str]]:
    samples: dict[str, list[float]] = {name: [] for name in SETTINGS}
    used: dict[str, str] = {}
    with busy_core(busy):
        for _ in range(reps):
            for name, n_threads in SETTINGS.items():  # alternating: the machine drifts
                ms, used[name] = ms_per_token(model, n_threads, n_tokens)
                samples[name].append(ms)
    return {name: (statistics.median(values), used[name]) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--layers", type=int, default=2, help="layers of the GPT-J-6B-shaped model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        models = {
            "tiny (4 layers, n_embd 256)": write_random_gptj(
                Path(folder) / "tiny.gguf", 4, "f16", n_embd=256, n_head=8, rotary_dim=16, n_inner=1024
            ),
            f"6B-shaped, {args.layers} layers, q8_0": write_random_gptj(Path(folder) / "6b.gguf", args.layers, "q8_0"),
        }
        print(f"{core.physical_core_count()} physical cores; median of {args.reps}, {args.tokens} tokens each\n")
        print("| model | machine | threads | ms/token | vs 1 thread | threads used (last rep) |")
        print("|---|---|---|---|---|---|")
        for label, path in models.items():
            model = Model(path)
            model.complete([1, 2], max_tokens=2)  # page cache, compute buffers
            for busy in (False, True):
                results = measure(model, busy, args.reps, args.tokens)
                base = results["1 thread"][0]
                for name, (ms, used) in results.items():
                    machine = "one core busy" if busy else "idle"
                    print(f"| {label} | {machine} | {name} | {ms:.2f} | {base / ms:.2f}x | {used} |")


if __name__ == "__main__":
    main()
