"""Prompt-processing and generation speed, measured like llama-bench (``gptj-ggml bench``).

Each repetition is timed by the engine itself (:class:`~gptj_ggml.Timings`: the C++ time of
each evaluate-and-sample call), so Python's own overhead is not counted:

- ``pp N``: N random token ids evaluated at once from an empty cache (one batch step for
  N <= n_batch), plus picking the next token: the time to first token.
- ``tg N``: N tokens generated one at a time, greedily, after a one-token start: the time
  per token of a chat reply.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ._native import core
from .model import Model
from .session import Session

# Greedy with no penalties: the cheapest sampler, so the figures are the model's.
_GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0, "ignore_eos": True}


@dataclass(frozen=True)
class BenchResult:
    """One test at one thread count: ``samples_ms`` holds each repetition's engine time."""

    test: str  # "pp512" or "tg128", as llama-bench names them
    n_prompt: int
    n_gen: int
    n_threads: int
    samples_ms: list[float]

    @property
    def n_tokens(self) -> int:
        return self.n_prompt or self.n_gen

    @property
    def tokens_per_s(self) -> list[float]:
        return [self.n_tokens / ms * 1e3 if ms > 0 else math.inf for ms in self.samples_ms]

    @property
    def mean(self) -> float:
        """Mean tokens/s over the repetitions."""
        return statistics.fmean(self.tokens_per_s)

    @property
    def stdev(self) -> float:
        """Sample standard deviation of tokens/s (0 with one repetition)."""
        rates = self.tokens_per_s
        return statistics.stdev(rates) if len(rates) > 1 else 0.0


def time_prompt(session: Session, ids: Sequence[int]) -> float:
    """Milliseconds the engine takes to evaluate ``ids`` from an empty cache and pick the next token."""
    session.reset()
    timings = session.complete(ids, max_tokens=1, **_GREEDY).timings
    return timings.prompt_ms


def time_generation(session: Session, first_id: int, n_tokens: int) -> float:
    """Milliseconds the engine takes to generate ``n_tokens`` one at a time after ``first_id``."""
    session.reset()
    # The first step evaluates first_id (counted as prompt); each of the next n_tokens steps
    # evaluates the previous token and samples the next one.
    timings = session.complete([first_id], max_tokens=n_tokens + 1, **_GREEDY).timings
    return timings.generation_ms


def run_bench(
    model: Model,
    *,
    n_prompt: Sequence[int] = (512,),
    n_gen: Sequence[int] = (128,),
    threads: Sequence[int] = (0,),
    repetitions: int = 5,
    seed: int = 0,
) -> Iterator[BenchResult]:
    """Run every ``pp`` test of ``n_prompt`` and ``tg`` test of ``n_gen`` at each thread count.

    Lengths of 0 are skipped; a thread count of 0 means one per physical core. Each thread
    count starts with one untimed warm-up of its shortest tests. Results are yielded as each
    test finishes.

    Raises:
        ValueError: a negative length, a thread count below 0, fewer than 1 repetition, or a
            test longer than the model's context.
    """
    n_prompt = [n for n in n_prompt if n != 0]
    n_gen = [n for n in n_gen if n != 0]
    if any(n < 0 for n in [*n_prompt, *n_gen]):
        raise ValueError("prompt and generation lengths must be >= 0")
    if any(t < 0 for t in threads):
        raise ValueError("thread counts must be >= 1 (0: one per physical core)")
    if repetitions < 1:
        raise ValueError(f"repetitions must be >= 1, got {repetitions}")
    n_ctx = max([*n_prompt, *(n + 1 for n in n_gen), 1])
    rng = np.random.default_rng(seed)

    def random_ids(n: int) -> list[int]:
        return rng.integers(0, model.n_vocab, size=n).tolist()

    for n_threads in threads:
        # A fixed count, also for 0 (all physical cores): figures are for that many threads.
        session = model.session(n_ctx=n_ctx, n_threads=n_threads or core.physical_core_count())
        if n_prompt:
            time_prompt(session, random_ids(min(n_prompt)))
        if n_gen:
            time_generation(session, random_ids(1)[0], min(min(n_gen), 4))
        for n in n_prompt:
            samples = [time_prompt(session, random_ids(n)) for _ in range(repetitions)]
            yield BenchResult(f"pp{n}", n, 0, session.n_threads, samples)
        for n in n_gen:
            samples = [time_generation(session, random_ids(1)[0], n) for _ in range(repetitions)]
            yield BenchResult(f"tg{n}", 0, n, session.n_threads, samples)
